#!/bin/sh
# Mutation testing of the modules that hold resmon's guarantees (issue 17).
#
# mutmut changes one thing at a time in a module (a < into <=, a constant,
# a removed call...) and runs the fast unit tests against each change; a
# mutant the tests do not notice "survives" and points at a weak test.
# Slow (minutes per module) and so not part of CI. See docs/testing.md for the
# scores measured and the surviving mutants judged harmless.
#
# Usage (from anywhere; mutmut is not a test dependency, install it apart):
#   .venv/bin/pip install mutmut
#   .ci/mutation.sh                      # every module below, one after another
#   .ci/mutation.sh resmon/wire.py ...   # only these
# Environment:
#   PYTHON            the interpreter with resmon and mutmut (default: .venv/bin/python;
#                     its bin/ directory must hold the mutmut command)
#   MUTATION_WORKDIR  where the copies and results go (default: artifacts/mutation)
#   MUTATION_JOBS     test processes at once (default: 1)
#
# Each module is mutated in its own copy of the tree, MUTATION_WORKDIR/<module>,
# so runs never touch the checkout. Afterwards, in that directory:
#   mutmut results                 lists the mutants that survived
#   mutmut show <mutant name>      shows one as a diff
# and MUTATION_WORKDIR/<module>.score holds "killed/total percent".
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
mutmut=$(dirname "$python")/mutmut
workdir=${MUTATION_WORKDIR:-$root/artifacts/mutation}
jobs=${MUTATION_JOBS:-1}

if [ $# -eq 0 ]; then
    set -- resmon/wire.py resmon/bus/amqp.py resmon/bus/connection.py resmon/bus/outbox.py \
        resmon/bus/topology.py resmon/bus/consumer.py resmon/bus/properties.py resmon/services/analyzer.py \
        resmon/webserver/fanout.py resmon/webserver/origins.py resmon/ratelimit.py resmon/analysis/pipeline.py resmon/services/liveness.py \
        resmon/analysis/liveness.py resmon/periodic.py
fi

# The fast unit tests only: no broker, no twistd, no browser.
unitTests="tests/test_liveness.py tests/test_web_units.py tests/test_analyzers_builtin.py
    tests/test_plugins.py"
for unit in "$root"/tests/test_units_*.py; do
    unitTests="$unitTests tests/$(basename "$unit")"
done

mkdir -p "$workdir"
for module in "$@"; do
    [ -f "$root/$module" ] || { echo "no such module: $module" >&2; exit 2; }
    name=$(echo "$module" | sed 's|/|.|g; s|\.py$||')
    copy="$workdir/$name"
    rm -rf "$copy"
    mkdir -p "$copy"
    cp -r "$root/resmon" "$root/tests" "$root/examples" "$root/web" "$root/pytest.ini" "$copy/"
    find "$copy" -name __pycache__ -prune -exec rm -rf {} +
    {
        echo "[mutmut]"
        echo "source_paths = resmon"
        echo "only_mutate = $module"
        # pytest-twisted runs the reactor once per process: every test run
        # (stats, clean run, each mutant) has to be a fresh fork.
        echo "process_isolation = forkserver"
        echo "also_copy ="
        echo "    examples"
        echo "    web"
        echo "pytest_add_cli_args = -p no:cacheprovider -q"
        echo "pytest_add_cli_args_test_selection ="
        for test in $unitTests; do echo "    $test"; done
    } > "$copy/setup.cfg"
    echo "== $module (in $copy)"
    (cd "$copy" && "$mutmut" run --max-children "$jobs" > run.log 2>&1) || {
        echo "mutmut failed on $module: see $copy/run.log" >&2
        tail -20 "$copy/run.log" >&2
        continue
    }
    (cd "$copy" && "$mutmut" export-cicd-stats > /dev/null)
    "$python" - "$copy/mutants/mutmut-cicd-stats.json" "$module" <<'PY' | tee "$workdir/$name.score"
import json, sys
stats = json.load(open(sys.argv[1]))
# A mutant no unit test reaches counts as surviving.
tested = stats["total"] - stats.get("skipped", 0)
killed = stats["killed"] + stats.get("timeout", 0)
percent = 100.0 * killed / tested if tested else 0.0
print(f"{sys.argv[2]}: {killed}/{tested} killed ({percent:.1f} %); "
      f"survived {stats['survived']}, no tests {stats.get('no_tests', 0)}, "
      f"suspicious {stats.get('suspicious', 0)}, timeout {stats.get('timeout', 0)}")
PY
done
