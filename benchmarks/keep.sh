# Sourced by the suite scripts in benchmarks/: keep a suite's tables, plot and tuning
# choices beside the other committed results.
keep() {  # keep SUITE_FOLDER RESULTS_FOLDER
    local from=$1 to=$2
    mkdir -p "$to"
    cp "$from"/results.md "$from"/results.csv "$to"/
    [ -f "$from"/accuracy_vs_bytes.png ] && cp "$from"/accuracy_vs_bytes.png "$to"/
    [ -d "$from"/tuning ] && (cd "$from" && find tuning -name choice.json -exec cp --parents {} "$OLDPWD/$to" \;)
    return 0
}
