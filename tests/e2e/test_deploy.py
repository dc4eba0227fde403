"""What deploy/ ships: the systemd unit passes `systemd-analyze verify` and
stays hardened (`systemd-analyze security` at most 4.0), and the Kubernetes
example's topology loads."""
import os
import re
import shutil
import unittest

from hyphatest import HYPHAD, SOURCE, TempDirTest, run

UNIT = os.path.join(SOURCE, "deploy", "hyphad.service")
K8S = os.path.join(SOURCE, "deploy", "kubernetes", "hypha.yaml")
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 4.0


def block_scalar(text, key):
    """The `key: |` block of a YAML mapping (the ConfigMap's data), dedented."""
    lines = text.split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.strip() == f"{key}: |")
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    out = []
    for ln in lines[start + 1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) < indent:
            break
        out.append(ln[indent:])
    return "\n".join(out).rstrip() + "\n"


@unittest.skipUnless(ANALYZE, "systemd-analyze is not installed (Debian's systemd package)")
class SystemdUnit(TempDirTest):
    def unit_here(self):
        """The unit with ExecStart at this build's hyphad (verify checks it is executable)."""
        with open(UNIT) as f:
            text = f.read()
        self.assertIn("ExecStart=/usr/local/bin/hyphad -c /etc/hypha/topology.yaml", text)
        return self.write("hyphad.service", text.replace("/usr/local/bin/hyphad", HYPHAD))

    def test_verify(self):
        r = run([ANALYZE, "verify", self.unit_here()], timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stderr.strip(), "", "verify warned")

    def test_security_exposure(self):
        r = run([ANALYZE, "security", "--offline=true", self.unit_here()], timeout=60)
        m = re.search(r"Overall exposure level for hyphad\.service: (\d+\.\d)", r.stdout)
        self.assertIsNotNone(m, r.stdout[-2000:] + r.stderr)
        self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, r.stdout)
        for needed in ("User=hypha", "UMask=0027", "ProtectSystem=strict", "NoNewPrivileges=yes",
                       "Type=notify", "WatchdogSec=", "Delegate=yes", "CapabilityBoundingSet="):
            with open(UNIT) as f:
                self.assertIn(needed, f.read())


class KubernetesExample(TempDirTest):
    def test_its_topology_loads(self):
        with open(K8S) as f:
            text = f.read()
        self.write("contracts.yaml", block_scalar(text, "contracts.yaml"))
        topo = block_scalar(text, "topology.yaml")
        # the worker's program and cwd exist in the image, not here
        topo = topo.replace("command: [python3, -m, example_worker]", "command: [/bin/true]")
        topo = topo.replace("cwd: /srv/hypha", f"cwd: {self.dir}")
        topo = topo.replace("/run/hypha/ctl/control.sock", os.path.join(self.dir, "ctl.sock"))
        path = self.write("topology.yaml", topo)
        r = run([HYPHAD, "--check", path])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("9464", r.stdout)  # the metrics listen the scrape annotations point at
        self.assertRegex(text, r'prometheus\.io/port: "9464"')
        self.assertRegex(text, r"containerPort: 9464")


if __name__ == "__main__":
    unittest.main()
