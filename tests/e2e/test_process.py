"""A worker's process settings (issue #15, item 2): it really runs as its
`user` and `group`, with its `umask` and `rlimits`, read back from
/proc/PID/status and /proc/PID/limits of the running worker."""
import json
import os
import shutil
import subprocess
import unittest

from hyphatest import HYPHAD, Hyphad, HyphadTest, run

ROOT = os.geteuid() == 0


def proc_fields(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def limits(pid):
    """{'Max open files': ('512', '1024'), ...}"""
    out = {}
    with open(f"/proc/{pid}/limits") as f:
        next(f)
        for line in f:
            name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
            out[name] = (soft, hard)
    return out


def others_can_run(path):
    """Every directory on the way has o+x and the file o+x: nobody can exec it."""
    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(1, len(parts)):
        d = "/".join(parts[:i]) or "/"
        if not os.stat(d).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o001)


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(kv.split("=", 1) for kv in f.read().decode().split("\0") if "=" in kv)


@unittest.skipUnless(ROOT, "running a worker as another user needs hyphad to be root (CI runs as root)")
class AsAnotherUser(HyphadTest):
    def test_user_group_umask_and_limits(self):
        h = self.start_hyphad({"w": {
            "command": ["/bin/sleep", "300"], "cwd": "/",
            "user": "nobody", "group": "nogroup", "umask": "0027",
            "rlimits": {"nofile": "512:1024", "core": 0, "stack": "8MiB", "nproc": 4000},
            "env": {"HOME": "/srv/w"},  # the topology's env wins over the user's HOME
        }})
        pid = int(h.wait_for(10, msg="started", worker="w")["pid"])
        st = proc_fields(pid)
        self.assertEqual(st["Uid"].split(), ["65534"] * 4)
        self.assertEqual(st["Gid"].split(), ["65534"] * 4)
        self.assertEqual(st["Groups"].split(), ["65534"])  # nogroup only: supplementary groups were set
        self.assertEqual(st["Umask"], "0027")
        lim = limits(pid)
        self.assertEqual(lim["Max open files"], ("512", "1024"))
        self.assertEqual(lim["Max core file size"], ("0", "0"))
        self.assertEqual(lim["Max stack size"], ("8388608", "8388608"))
        self.assertEqual(lim["Max processes"], ("4000", "4000"))
        env = environ(pid)
        self.assertEqual((env["USER"], env["LOGNAME"], env["HOME"]), ("nobody", "nobody", "/srv/w"))
        # still hyphad's to stop: the stop signal reaches another user's group
        self.assertEqual(h.stop(20), 0, h.tail())
        self.assertEqual([e["status"] for e in h.find(msg="stopped", worker="w")], ["SIGTERM"])

    def test_a_directory_the_user_cannot_enter_is_a_spawn_error(self):
        private = os.path.join(self.dir, "private")
        os.mkdir(private, 0o700)
        h = self.start_hyphad({"w": {"command": ["/bin/sleep", "300"], "cwd": private, "user": "nobody",
                                     "restart": "never"}})
        e = h.wait_for(10, msg=lambda m: m.startswith("unable to spawn w[0]"), worker="w")
        self.assertEqual(e["msg"], f"unable to spawn w[0]: chdir {private}: Permission denied")  # as nobody
        self.assertEqual(h.wait_for(10, msg="exited", worker="w")["reason"], "spawn")

    @unittest.skipUnless(shutil.which("setpriv"), "setpriv (util-linux) is not installed")
    def test_a_hyphad_with_capabilities_instead_of_root(self):
        if not others_can_run(HYPHAD):
            self.skipTest(f"{HYPHAD} cannot be run as nobody from where it was built")
        # as deploy/hyphad.service runs it: its own user, CAP_SETUID, CAP_SETGID and CAP_KILL ambient
        os.chmod(self.dir, 0o1777)  # its control socket goes here
        os.chmod(os.path.join(self.dir, "contracts.yaml"), 0o644)
        path = self.write("t.yaml", json.dumps({
            "version": 1, "schema": "contracts.yaml", "control": {"socket": "ctl.sock"}, "cgroup": "off",
            "workers": {"w": {"command": ["/bin/sleep", "300"], "cwd": "/", "user": "daemon"}}}))
        os.chmod(path, 0o644)
        caps = "+setuid,+setgid,+kill"
        h = Hyphad(path, prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 f"--inh-caps={caps}", f"--ambient-caps={caps}"])
        self.addCleanup(self._finish, h)
        pid = int(h.wait_for(10, msg="started", worker="w")["pid"])
        st = proc_fields(pid)
        self.assertEqual(st["Uid"].split()[0], "1")  # daemon
        self.assertEqual(proc_fields(h.pid)["Uid"].split()[0], "65534")  # hyphad: nobody
        for k in ("CapPrm", "CapEff", "CapInh", "CapAmb"):
            self.assertEqual(int(st[k], 16), 0, f"the worker inherited capabilities: {k} {st[k]}")
        self.assertEqual(h.stop(20), 0, h.tail())  # CAP_KILL: the stop signal reaches daemon's group
        self.assertEqual([e["status"] for e in h.find(msg="stopped", worker="w")], ["SIGTERM"])

    def test_hyphad_not_root_refuses_another_user_at_load(self):
        os.chmod(self.dir, 0o755)
        for name in ("contracts.yaml",):
            os.chmod(os.path.join(self.dir, name), 0o644)
        path = self.write("t.yaml", "version: 1\nschema: contracts.yaml\nworkers:\n  w:\n"
                                    "    command: [/bin/sleep, '1']\n    user: root\n")
        os.chmod(path, 0o644)
        if not others_can_run(HYPHAD):
            self.skipTest(f"{HYPHAD} cannot be run as nobody from where it was built")
        try:
            r = subprocess.run([HYPHAD, "--check", path], capture_output=True, text=True, timeout=30,
                               user=65534, group=65534, extra_groups=[], cwd="/")
        except PermissionError:
            self.skipTest(f"{HYPHAD} cannot be run as nobody from where it was built")
        if r.returncode == 126 or "Permission denied" in r.stderr and "t.yaml" not in r.stderr:
            self.skipTest(f"{HYPHAD} cannot be run as nobody from where it was built: {r.stderr}")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("t.yaml:6:11: workers.w.user: hyphad runs as uid 65534, not as root: only root (or "
                      "CAP_SETUID and CAP_SETGID) can start a worker as uid 0 (run hyphad as root, or remove `user`)",
                      r.stderr)


if __name__ == "__main__":
    unittest.main()
