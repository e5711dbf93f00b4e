"""A FAKE `adb` standing in for a phone (adb and a phone do not exist on the CI machine): it runs on THIS machine what
adb would run on the phone, so the transport (adapters/adb.AdbPhone, executors/adb.py) is exercised end to end
except for adb itself and the phone's hardware.

    adb [-s SERIAL] get-state          "device" (or, with FAKE_PHONE_GONE set, adb's "no devices" error)
    adb [-s SERIAL] push LOCAL REMOTE  a copy (REMOTE is a local path: the test's remote_dir is a temporary dir)
    adb [-s SERIAL] shell 'COMMAND'    `sh -c COMMAND` here; `dumpsys battery|thermalservice` prints the recorded
                                       fixtures in FAKE_PHONE_DATA (the first call "before", later ones "after";
                                       FAKE_PHONE_STATE: a directory that remembers which)
Every call is appended to FAKE_PHONE_LOG (one line each) so the test can see what was pushed and run.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    log = os.environ.get("FAKE_PHONE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(" ".join(argv) + "\n")
    if argv[:1] == ["-s"]:
        argv = argv[2:]
    if os.environ.get("FAKE_PHONE_GONE"):
        print("adb: no devices/emulators found", file=sys.stderr)
        return 1
    cmd, args = argv[0], argv[1:]
    if cmd == "get-state":
        print("device")
        return 0
    if cmd == "push":
        shutil.copy(args[0], args[1])
        print(f"{args[0]}: 1 file pushed, 0 skipped.")
        return 0
    if cmd == "shell":
        line = " ".join(args)
        if line.startswith("dumpsys "):
            return dumpsys(line.split()[1])
        return subprocess.run(["sh", "-c", line]).returncode
    print(f"fake adb: unknown command {cmd}", file=sys.stderr)
    return 1


def dumpsys(service: str) -> int:
    data = Path(os.environ["FAKE_PHONE_DATA"])
    name = {"battery": "battery", "thermalservice": "thermal"}.get(service)
    if name is None:
        print(f"Can't find service: {service}")
        return 0
    marker = Path(os.environ["FAKE_PHONE_STATE"]) / name  # a directory of the test's
    when = "after" if marker.exists() else "before"
    marker.write_text("seen")
    sys.stdout.write((data / f"dumpsys_{name}_{when}.txt").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
