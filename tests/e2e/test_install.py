"""`cmake --install` lays hypha out as a Debian service (issue #15, item 4),
into a staging directory (DESTDIR) so that no root is needed: binaries, man
pages that `man` renders, the systemd unit pointing at this prefix's hyphad,
bash and zsh completion (worker names from the running hyphad), the Python
SDK where Debian's python3 looks, the documents and the examples. tests/
run-all.sh also builds the .deb, installs it with dpkg and purges it."""
import json
import os
import shutil
import subprocess
import sys

from hyphatest import BUILD, HyphadTest, TempDirTest, run

CMAKE = shutil.which("cmake")


class Staged(TempDirTest):
    @classmethod
    def setUpClass(cls):
        cls.stage = os.path.join(BUILD, "test-install-stage")
        shutil.rmtree(cls.stage, ignore_errors=True)
        r = subprocess.run([CMAKE, "--install", BUILD, "--prefix", "/usr"], env=dict(os.environ, DESTDIR=cls.stage),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        cls.usr = os.path.join(cls.stage, "usr")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.stage, ignore_errors=True)

    def test_binaries(self):
        for b in ("hyphad", "hyphactl", "hypha-codegen"):
            path = os.path.join(self.usr, "bin", b)
            self.assertTrue(os.access(path, os.X_OK), path)
        self.assertTrue(run([os.path.join(self.usr, "bin", "hyphactl"), "--version"]).stdout.startswith("hyphactl "))

    def test_man_pages_render(self):
        for page, sec in (("hyphad", 8), ("hyphactl", 1), ("hypha-codegen", 1), ("hypha-topology", 5)):
            path = os.path.join(self.usr, "share", "man", f"man{sec}", f"{page}.{sec}")
            self.assertTrue(os.path.exists(path), path)
            if shutil.which("man"):
                r = run(["man", "-l", path], env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("NAME", r.stdout)
                self.assertIn(page, r.stdout)
        r = run(["man", "-l", os.path.join(self.usr, "share", "man", "man1", "hyphactl.1")],
                env=dict(os.environ, MANWIDTH="100", MANPAGER="cat", PAGER="cat"))
        for cmd in ("status", "restart", "signal", "--rolling", "64"):
            self.assertIn(cmd, r.stdout)

    def test_unit_points_at_this_prefix(self):
        with open(os.path.join(self.usr, "lib", "systemd", "system", "hyphad.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/bin/hyphad -c /etc/hypha/topology.yaml", unit)
        self.assertIn("User=hypha", unit)

    def test_python_sdk_and_examples(self):
        site = os.path.join(self.usr, "lib", "python3", "dist-packages")
        code = "import hypha, hypha.testing; print(hypha.__file__)"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        r = run([sys.executable, "-c", code], env=dict(env, PYTHONPATH=site), cwd="/")
        self.assertEqual(r.stdout.strip(), os.path.join(site, "hypha", "__init__.py"), r.stderr)
        self.assertTrue(os.path.exists(os.path.join(site, "hypha", "py.typed")))
        docs = os.path.join(self.usr, "share", "doc", "hypha")
        for name in ("runbook.md", "python-sdk.md", "coming-from.md", "README.md", "examples/sdk/topology.yaml",
                     "examples/demo/demo.yaml", "examples/demo/workers/ticker.py"):
            self.assertTrue(os.path.exists(os.path.join(docs, name)), name)
        r = run([os.path.join(self.usr, "bin", "hyphad"), "--check", os.path.join(docs, "examples", "sdk", "topology.yaml")])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_completion_files(self):
        self.assertTrue(os.path.exists(os.path.join(self.usr, "share", "bash-completion", "completions", "hyphactl")))
        self.assertTrue(os.path.exists(os.path.join(self.usr, "share", "zsh", "vendor-completions", "_hyphactl")))


class BashCompletion(HyphadTest):
    """The completion asks the running hyphad for its workers."""

    def complete(self, *words):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "completion",
                              "hyphactl.bash")
        line = " ".join(f"'{w}'" for w in words)
        prog = (f"source '{script}'; COMP_WORDS=(hyphactl {line}); COMP_CWORD={len(words)}; _hyphactl; "
                'printf "%s\\n" "${COMPREPLY[@]}"')
        env = dict(os.environ, PATH=BUILD + os.pathsep + os.environ["PATH"])
        r = run(["bash", "-c", prog], env=env, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return sorted(r.stdout.split())

    def test_commands_options_and_worker_names(self):
        h = self.start_hyphad({"risk": {"command": ["/bin/sleep", "300"], "instances": 2},
                               "feed": {"command": ["/bin/sleep", "300"]}}, {"start_timeout": "0s"})
        h.wait_count(3, 10, msg="started")
        sock = os.path.join(self.dir, "ctl.sock")
        self.assertEqual(self.complete("re"), ["reload", "restart"])
        self.assertEqual(self.complete("--socket", sock, "restart", ""), ["all", "feed", "risk"])
        self.assertEqual(self.complete("--socket", sock, "restart", "--r"), ["--rolling"])
        self.assertEqual(self.complete("--socket", sock, "signal", "risk", "US"), ["USR1", "USR2"])
        self.assertEqual(self.complete("--socket", "/nonexistent/ctl.sock", "stop", ""), ["all"])  # hyphad away


if __name__ == "__main__":
    import unittest
    unittest.main()
