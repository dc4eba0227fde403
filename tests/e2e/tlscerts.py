"""Throwaway certificates for the TLS tests, made with the openssl command:
certificate authorities, and server and client certificates signed by
them, valid now, expired, or not valid yet."""
import os
import subprocess

CA_CONF = """[ca]
default_ca = d
[d]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = p
copy_extensions = copy
unique_subject = no
[p]
commonName = supplied
"""


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")
    return r.stdout


class Certs:
    def __init__(self, directory):
        self.dir = os.path.join(directory, "pki")
        os.makedirs(self.dir, exist_ok=True)
        self.cas = {}

    def path(self, name):
        return os.path.join(self.dir, name)

    def ca(self, name="ca"):
        """A certificate authority: the path of its certificate."""
        if name in self.cas:
            return self.cas[name]
        d = self.path(name + ".d")
        os.makedirs(d)
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(CA_CONF)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("01\n")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", f"/CN={name}", cwd=d)
        self.cas[name] = os.path.join(d, "ca.pem")
        return self.cas[name]

    def leaf(self, name, ca="ca", cn=None, dns=("localhost",), ips=("127.0.0.1",), client=False,
             start=None, end=None, days=30):
        """A certificate signed by `ca` (made if need be): (cert, key) paths.
        start/end: YYYYMMDDHHMMSSZ, for one expired or not valid yet."""
        d = os.path.dirname(self.ca(ca))
        cert, key, csr, ext = (self.path(f"{name}.{x}") for x in ("pem", "key", "csr", "ext"))
        sans = [f"DNS:{n}" for n in dns] + [f"IP:{i}" for i in ips]
        with open(ext, "w") as f:
            if sans:
                f.write("subjectAltName=" + ",".join(sans) + "\n")
            f.write("extendedKeyUsage=" + ("clientAuth" if client else "serverAuth") + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                "-out", csr, "-subj", f"/CN={cn or name}", cwd=d)
        when = ["-startdate", start, "-enddate", end] if start else ["-days", str(days)]
        openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", csr,
                "-out", cert, "-extfile", ext, *when, cwd=d)
        return cert, key

    @staticmethod
    def not_after(cert):
        """The certificate's end, as openssl prints it (notAfter=...)."""
        return openssl("x509", "-in", cert, "-noout", "-enddate", cwd="/").strip().split("=", 1)[1]
