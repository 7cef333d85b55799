# Sourced by the suite scripts in benchmarks/: keep a suite's tables, plot and tuning
# choices beside the other committed results.
keep() {  # keep SUITE_FOLDER RESULTS_FOLDER
    local from=$1 to=$2
    mkdir -p "$to"
    cp "$from"/results.md "$from"/results.csv "$to"/
    [ -f "$from"/accuracy_vs_bytes.png ] && cp "$from"/accuracy_vs_bytes.png "$to"/
    [ -d "$from"/tuning ] && keep_choices "$from" "$to/tuning"
    return 0
}
keep_choices() {  # keep_choices SUITE_FOLDER TO: each tuning/<task>/<method>/choice.json as TO/<task>/<method>/choice.json,
    # and TO/choices.md made again from every record kept there (those of earlier suite folders too)
    local to
    to="$(mkdir -p "$2" && cd "$2" && pwd)"  # absolute: the copy runs from inside the suite folder
    [ "$(basename "$to")" = tuning ] || { echo "keep_choices: $2 is no folder named tuning" >&2; return 2; }
    (cd "$1/tuning" && find . -name choice.json -exec cp --parents {} "$to" \;)
    "${PY:-.venv/bin/python}" -c 'import sys; from pear.harness.suites.tuning import write_choices_table as w; w(sys.argv[1])' \
        "$(dirname "$to")"
}
keep_merged() {  # keep_merged SUITE_FOLDER RESULTS_FOLDER: the suite's rows joined to those kept there
    # (benchmarks/merge_results.py), so a lost suite folder's committed runs stay in the tables.
    mkdir -p "$2"
    "${PY:-.venv/bin/python}" benchmarks/merge_results.py "$2" "$1"
}
