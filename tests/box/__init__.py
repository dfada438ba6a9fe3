"""The booted-systemd test box: Debian 12 or 13 (OPTILLM_PROXY_BOX_RELEASE) with a real systemd, under nspawn.

- mirror.py   the Debian mirror, parsed from the host's apt configuration at run time
- base.py     debootstrap of the base rootfs, cached under $OPTILLM_PROXY_TEST_CACHE/box-base-<hash>/
- machine.py  Box: a per-session copy of the base, booted, `run(cmd)` via nsenter, reboot, teardown
- service.py  the optillm-proxy unit seen from outside: main PID, /health, timed kill/restart
- install.py  the real install.sh run inside the box
- __main__.py `python -m tests.box up|down` for bench/box_restart.sh

Root only (debootstrap, nspawn, nsenter). tests/fixtures/box.py turns a missing prerequisite
into pytest.fail with what to install.
"""
