"""pear.atomic: no write follows a symlink it did not create."""

from pathlib import Path

import pytest

from pear.atomic import atomic_dir_write, atomic_write_text, check_replaceable, recover_dir
from pear.errors import PearError


@pytest.fixture
def notes(tmp_path) -> Path:
    """Someone's folder of notes, which a planted link points at."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def test_recover_dir_never_moves_or_removes_through_a_planted_link(tmp_path, notes):
    parent = tmp_path / "run"
    parent.mkdir()
    dest = parent / "state"
    (parent / ".state.old-1").symlink_to(notes)  # looks like a killed writer's previous version
    (parent / ".state.tmp-x").symlink_to(notes)
    (parent / ".state.old-2").symlink_to(tmp_path / "nowhere")  # dangling
    recover_dir(dest)
    assert not dest.exists() and not dest.is_symlink()
    assert (notes / "thesis.tex").read_text() == "years of work"


def test_a_replaced_folder_holding_a_link_never_touches_its_target(tmp_path, notes):
    target = notes / "thesis.tex"
    target.chmod(0o600)

    def write(tmp: Path) -> None:
        (tmp / "data.txt").write_text("new")
        (tmp / "link").symlink_to(target)

    atomic_dir_write(tmp_path / "out", write)
    assert (tmp_path / "out" / "data.txt").read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o600  # the chmod meant for Pear's files skipped it


def test_a_link_under_a_name_pear_owns_is_not_pears(tmp_path, notes):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "args.yaml").write_text("x: 1\n")
    (folder / "train.log").symlink_to(notes / "thesis.tex")  # appending to the log would write there
    with pytest.raises(PearError, match=r"holds files Pear did not write there \(train.log\)"):
        check_replaceable(folder, ("args.yaml", "train.log"), "Pear run folder")


def test_atomic_write_replaces_a_link_not_its_target(tmp_path, notes):
    link = tmp_path / "out.txt"
    link.symlink_to(notes / "thesis.tex")
    atomic_write_text(link, "new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert (notes / "thesis.tex").read_text() == "years of work"


def test_a_log_is_appended_to_but_never_through_a_planted_link(tmp_path):
    from pear.atomic import open_append
    from pear.errors import PearError

    log = tmp_path / "seed0.log"
    with open_append(log) as fh:
        fh.write("one\n")
    with open_append(log) as fh:
        fh.write("two\n")
    assert log.read_text() == "one\ntwo\n"
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    planted = tmp_path / "train.log"
    planted.symlink_to(notes)
    with pytest.raises(PearError, match="symbolic link"):
        open_append(planted)
    assert notes.read_text() == "mine\n"


def test_train_log_handler_refuses_a_link(tmp_path):
    import logging

    from pear.errors import PearError
    from pear.harness.rundir import _LogFile

    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    (tmp_path / "train.log").symlink_to(notes)
    with pytest.raises(PearError, match="symbolic link"):
        _LogFile(tmp_path / "train.log", encoding="utf-8")
    assert notes.read_text() == "mine\n"
    h = _LogFile(tmp_path / "other.log", encoding="utf-8")
    h.emit(logging.LogRecord("pear", logging.INFO, __file__, 1, "hello", None, None))
    h.close()
    assert "hello" in (tmp_path / "other.log").read_text()
