"""Using a trained run: rebuilding its model and `pear eval` (`runs`), `pear predict`
(`predict`) and `pear inspect` (`inspection`)."""
