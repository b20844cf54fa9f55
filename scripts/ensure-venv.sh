# shellcheck shell=sh
# Sourced by ./run-demo and ./run-tests: makes sure a Python >= 3.11 virtual environment is
# active, so that pip never touches the system Python (Debian 12 and Ubuntu 24.04 refuse that:
# PEP 668, "externally-managed-environment").
#
# - Inside an active virtual environment (VIRTUAL_ENV set), that one is used.
# - Otherwise .venv/ at the top of the checkout, made with `$PYTHON -m venv` (PYTHON defaults to
#   python3) the first time. Debian and Ubuntu ship the venv module's pip bootstrap (ensurepip)
#   in a separate package, python3-venv: without it this stops with the command to install it.
# On return, `python` and `pip` are the environment's.

: "${cw_root:?set by the script that sources this file}"

cw_fail() {
    printf '%s\n' "$@" >&2
    exit 1
}

if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    cw_venv=$VIRTUAL_ENV
else
    cw_venv=$cw_root/.venv
    cw_python=${PYTHON:-python3}
    command -v "$cw_python" >/dev/null 2>&1 ||
        cw_fail "camwatch: $cw_python not found; it needs Python >= 3.11" \
                "  Debian/Ubuntu: sudo apt install python3 python3-venv"
    "$cw_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        cw_fail "camwatch: needs Python >= 3.11, $cw_python is $("$cw_python" -c 'import platform; print(platform.python_version())')" \
                "  on an older system install a newer Python (e.g. sudo apt install python3.11 python3.11-venv)" \
                "  and run again with PYTHON=python3.11"
    if [ ! -x "$cw_venv/bin/pip" ]; then
        if ! "$cw_python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            cw_version=$("$cw_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
            cw_fail "camwatch: $cw_python cannot create a virtual environment: its venv module or pip bootstrap (ensurepip) is missing." \
                    "  Debian/Ubuntu: sudo apt install python3-venv   (or python$cw_version-venv)" \
                    "  then run this command again."
        fi
        echo "camwatch: creating a virtual environment in $cw_venv (once)" >&2
        "$cw_python" -m venv "$cw_venv" ||
            cw_fail "camwatch: '$cw_python -m venv $cw_venv' failed (see above)"
    fi
fi
VIRTUAL_ENV=$cw_venv
PATH=$cw_venv/bin:$PATH
export VIRTUAL_ENV PATH
unset PYTHONHOME
