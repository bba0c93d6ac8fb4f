#!/usr/bin/env bash
# Dependency audit: pip-audit over the project's installed environment (.venv), see docs/security.md.
#
# Policy:
#   - any known vulnerability (PYSEC / GHSA / CVE) in an installed package fails the audit (exit 1);
#     pip-audit's data has no "known exploited" flag, so every known one counts (a superset of
#     the known-exploited ones). An accepted risk goes in tests/security/audit-ignore.txt
#     ("<ID>  # why, until when") and is passed to pip-audit as --ignore-vuln.
#   - the vulnerability database unreachable for every package (offline machine, a package mirror
#     without PyPI's JSON API): prints "audit skipped: vulnerability database unreachable" and
#     exits 0. This is the only case that passes without an audit.
#   - some packages could not be looked up: they are listed; the rest is judged as above.
# Usage: bash tests/security/audit.sh   (or make audit); AUDIT_SERVICE=osv to ask OSV instead of PyPI.
set -uo pipefail
cd "$(dirname "$0")/../.."

VENV=${VENV:-.venv}
SERVICE=${AUDIT_SERVICE:-pypi}
AUDIT="$VENV/bin/pip-audit"
if [ ! -x "$AUDIT" ]; then
    echo "audit: $AUDIT not found; install the security extra (pip install -e '.[security]')" >&2
    exit 2
fi

ignore_args=()
if [ -f tests/security/audit-ignore.txt ]; then
    while read -r id _; do
        case "$id" in ''|'#'*) continue ;; esac
        ignore_args+=(--ignore-vuln "$id")
    done < tests/security/audit-ignore.txt
fi

report=$(mktemp)
trap 'rm -f "$report"' EXIT
# pip-audit exits 1 when it finds vulnerabilities; the JSON report is judged below either way.
timeout 900 "$AUDIT" --path "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    --vulnerability-service "$SERVICE" --skip-editable --progress-spinner off \
    --format json --output "$report" "${ignore_args[@]}" 2> "$report.err"
status=$?
if [ ! -s "$report" ]; then
    echo "audit: pip-audit failed (exit $status) without a report:" >&2
    tail -5 "$report.err" >&2
    if grep -qiE "connection|resolve|timed out|unreachable|network" "$report.err"; then
        echo "audit skipped: vulnerability database unreachable ($SERVICE)"
        exit 0
    fi
    exit 2
fi
rm -f "$report.err"

"$VENV/bin/python" - "$report" "$SERVICE" <<'PY'
import json
import sys

report, service = sys.argv[1], sys.argv[2]
dependencies = json.load(open(report))["dependencies"]
skipped = [d for d in dependencies if d.get("skip_reason")]
audited = [d for d in dependencies if not d.get("skip_reason")]
if not audited:
    reasons = sorted({d["skip_reason"].split(":")[0] for d in skipped})
    print(
        f"audit skipped: vulnerability database unreachable ({service}: none of "
        f"{len(skipped)} packages could be looked up: {'; '.join(reasons)})"
    )
    sys.exit(0)
found = [(d, v) for d in audited for v in d.get("vulns", [])]
print(f"audit ({service}): {len(audited)} packages checked, {len(skipped)} not found, "
      f"{len(found)} known vulnerabilities")
for dependency in skipped:
    print(f"  not checked: {dependency['name']} ({dependency.get('version', '?')})")
for dependency, vuln in found:
    fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
    aliases = ", ".join(vuln.get("aliases", []))
    print(f"  VULNERABLE {dependency['name']} {dependency['version']}: {vuln['id']}"
          f"{f' ({aliases})' if aliases else ''}; fixed in: {fixes}")
sys.exit(1 if found else 0)
PY
