"""What every SDK check shares: run each named check, report it on one
line, then `N passed, N failed` and an exit status."""
import sys


def run_checks(checks):
    results = []
    for name, fn in checks:
        try:
            fn()
            results.append(True)
            print(f"ok    {name}")
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            results.append(False)
            print(f"FAIL  {name}: {e!r}")
    print(f"{results.count(True)} passed, {results.count(False)} failed")
    sys.exit(0 if all(results) else 1)
