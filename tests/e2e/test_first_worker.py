"""docs/first-worker.md, followed as written, in a directory outside the
checkout: the SDK installed with pip into a virtual environment, the
classes generated, the doc's unit test run, the doc's topology checked and
run under the real hyphad."""
import os
import re
import shutil
import subprocess
import sys
import unittest

from hyphatest import SOURCE, HyphadTest, Hyphad, run

CODEGEN = os.environ.get("HYPHA_CODEGEN", os.path.join(os.path.dirname(os.environ.get("HYPHAD", "")), "hypha-codegen"))
HYPHAD = os.environ.get("HYPHAD", os.path.join(SOURCE, "build", "hyphad"))
DOC = os.path.join(SOURCE, "docs", "first-worker.md")


def blocks(lang):
    """The doc's fenced code blocks of that language that start with a
    `# FILE` comment, by FILE."""
    with open(DOC) as f:
        text = f.read()
    found = {}
    for b in re.findall(r"```" + lang + r"\n(.*?)```", text, re.S):
        m = re.match(r"# ([\w.]+)", b)
        if m:
            found[m.group(1)] = b
    return found


HELLO = """
from hypha import Worker
from messages import TextMessage
worker = Worker()

@worker.on_start
def say():
    worker.publish(TextMessage(sender="hello", content="hi", timestamp=1))

@worker.on(TextMessage)
def heard(t):
    if t.sender == "shout":
        worker.log.info("heard %s", t.content)

worker.run()
"""


class FirstWorkerDoc(HyphadTest):
    def setUp(self):
        super().setUp()
        self.project = os.path.join(self.dir, "shout")  # "mkdir -p ~/shout"
        os.makedirs(self.project)
        py = blocks("python")
        for name in ("shout.py", "test_shout.py"):
            with open(os.path.join(self.project, name), "w") as f:
                f.write(py[name])
        shutil.copy(os.path.join(SOURCE, "config", "contracts.yaml"), self.project)
        r = run([CODEGEN, "contracts.yaml", "--py-out", "messages.py"], cwd=self.project)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.python = self.install_sdk()

    def install_sdk(self):
        """`python3 -m venv .venv` and `.venv/bin/pip install $HYPHA/python-runtime`;
        where venv or pip is missing, the SDK on PYTHONPATH instead."""
        venv = os.path.join(self.project, ".venv")
        made = run([sys.executable, "-m", "venv", venv], timeout=120)
        if made.returncode == 0:
            pip = run([os.path.join(venv, "bin", "pip"), "install", "--no-index", "--quiet",
                       os.path.join(SOURCE, "python-runtime")], timeout=300)
            self.assertEqual(pip.returncode, 0, pip.stdout + pip.stderr)
            self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            return os.path.join(venv, "bin", "python")
        self.env = dict(os.environ, PYTHONPATH=os.path.join(SOURCE, "python-runtime"))
        return sys.executable

    def test_as_written(self):
        # step 3: the doc's unit test passes
        r = run([self.python, "-m", "unittest", "test_shout"], cwd=self.project, env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Ran 1 test", r.stderr)
        # step 4: the doc's topology checks and runs
        topo = blocks("yaml")["topology.yaml"]
        if self.python == sys.executable:  # no venv here: the interpreter that runs the tests
            topo = topo.replace(".venv/bin/python", sys.executable)
        hello = os.path.join(self.project, "hello.py")
        with open(hello, "w") as f:
            f.write(HELLO)
        # a second worker, to say something to shout and hear the answer
        topo += (f"  hello:\n    command: [{topo.split('command: [')[1].split(',')[0]}, -u, hello.py]\n"
                 f"    publish: [TextMessage]\n    subscribe: [TextMessage]\n")
        path = os.path.join(self.project, "topology.yaml")
        with open(path, "w") as f:
            f.write(topo)
        check = run([HYPHAD, "--check", path], env=self.env)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        h = Hyphad(path, env={"PYTHONPATH": self.env.get("PYTHONPATH", "")})
        self.addCleanup(self._finish, h)
        h.wait_for(60, component="shout[0]", msg="got hi", level="info")
        h.wait_for(30, component="hello[0]", msg="heard HI", level="info")
        self.assertEqual(h.stop(30), 0, h.tail())
        stopped = {e["worker"]: e["status"] for e in h.find(msg="stopped")}
        self.assertEqual(stopped, {"shout": "0", "hello": "0"}, h.tail())


if __name__ == "__main__":
    unittest.main()
