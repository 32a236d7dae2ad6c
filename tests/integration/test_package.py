"""Packaging: the Debian package built with cpack from the ctest build tree (REPEATERD_BUILD_DIR),
its contents and control data (dpkg-deb), and an install, reinstall, remove and purge with
dpkg --root into a scratch root made here, whose maintainer scripts run on this host's
systemd-sysusers and systemd-tmpfiles against that root (--force-script-chrootless, DPKG_ROOT).
Also the files the package ships: the production config template (config/repeaterd.yaml) passes
--check-config, and the man pages describe every option --help lists."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import SOURCE_DIR, binary, ctl_binary

BUILD_DIR = Path(os.environ.get("REPEATERD_BUILD_DIR", SOURCE_DIR / "build"))
TEMPLATE = SOURCE_DIR / "config" / "repeaterd.yaml"
TEMPLATE_ENV = {"REPEATERD_TOKEN_MY_PROJECT": "a-long-random-token"}


def run(cmd: list[str], *, check: bool = True, timeout: float = 120, env: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}\n"
                             f"--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}")
    return p


def check_config(path: Path, env: dict, exe: Path | None = None) -> subprocess.CompletedProcess:
    """repeaterd --check-config with exactly these variables set (plus PATH and the sanitizers')."""
    keep = {k: v for k, v in os.environ.items() if k == "PATH" or re.match(r"^(A|UB|L)SAN_OPTIONS$", k)}
    return subprocess.run([str(exe or binary()), "--check-config", str(path)], capture_output=True,
                          text=True, timeout=30, env={**keep, **env})


def uncomment_examples(text: str) -> str:
    """The template with its commented smtp, connections and repeaters examples switched on."""
    out = []
    block = None   # the key whose commented example lines follow
    for line in text.splitlines():
        m = re.match(r"^(connections|repeaters): \[\]", line)
        if m:
            block = m[1]
            out.append(f"{block}:")
            continue
        if line.startswith("# smtp:"):
            block = "smtp"
            out.append("smtp:")
            continue
        if block and line.startswith("#  "):
            out.append(line[1:] if block != "smtp" else line[2:])
            continue
        block = None
        out.append(line)
    return "\n".join(out) + "\n"


class ProductionConfig(unittest.TestCase):
    """config/repeaterd.yaml, installed as /etc/repeaterd/repeaterd.yaml."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="repeaterd-config-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_template_passes_check_config_with_its_token(self):
        p = check_config(TEMPLATE, TEMPLATE_ENV)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("warning", p.stderr, "the template should start without warnings")

    def test_template_refuses_to_start_until_the_token_is_set(self):
        # systemd's ExecStartPre check fails until the admin fills /etc/repeaterd/environment.
        p = check_config(TEMPLATE, {})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertRegex(p.stderr, r"repeaterd\.yaml:\d+:\d+: .*REPEATERD_TOKEN_MY_PROJECT is not set")

    def test_template_uses_the_system_paths(self):
        text = TEMPLATE.read_text()
        for line in ("  path: /var/lib/repeaterd/repeaterd.db",
                     "  events_file: /var/log/repeaterd/events.log",
                     "  listen: unix:/var/lib/repeaterd/repeaterd.sock"):
            self.assertIn("\n" + line, text)
        # The environment template names every variable the template and its examples use.
        env_template = (SOURCE_DIR / "config" / "repeaterd.environment").read_text()
        active = re.sub(r"#.*", "", uncomment_examples(text))
        names = set(re.findall(r"_env: ([A-Z][A-Z0-9_]*)", active))
        self.assertIn("REPEATERD_TOKEN_MY_PROJECT", names)
        for name in names:
            self.assertIn(f"#{name}=", env_template, f"{name} is not in config/repeaterd.environment")

    def test_commented_examples_are_valid_once_uncommented(self):
        path = self.tmp / "repeaterd.yaml"
        path.write_text(uncomment_examples(TEMPLATE.read_text()))
        p = check_config(path, {**TEMPLATE_ENV, "SMTP_PASSWORD": "x", "OPENFN_TOKEN": "y"})
        self.assertEqual(p.returncode, 0, f"{p.stderr}\n--- the file ---\n{path.read_text()}")
        self.assertNotIn("warning", p.stderr)
        self.assertIn("\nrepeaters:\n  - name: forms-to-openfn\n", path.read_text(),
                      "the examples were not switched on")


class ManPages(unittest.TestCase):
    """man/*.8.in: every option and command of --help is described, and groff finds no error."""

    @staticmethod
    def page(name: str) -> str:
        # roff writes "-" as "\-"; the page is compared as a reader sees it.
        return (SOURCE_DIR / "man" / f"{name}.8.in").read_text().replace("\\-", "-")

    @staticmethod
    def options(help_text: str) -> set[str]:
        return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_text)) - {"--help"}

    @staticmethod
    def commands(help_text: str) -> list[str]:
        _, _, subs = help_text.partition("Subcommands:")
        return re.findall(r"^  ([a-z][a-z-]*) ", subs, re.M)

    def help(self, exe: Path, *args: str) -> str:
        return run([exe, *args, "--help"], timeout=30).stdout

    def test_repeaterd_page_covers_help(self):
        page = self.page("repeaterd")
        for opt in self.options(self.help(binary())):
            self.assertIn(opt, page, f"repeaterd {opt} (from --help) is not in man/repeaterd.8.in")

    @staticmethod
    def tags(page: str) -> list[set[str]]:
        """The words of each .TP tag (the line after .TP): where a page names its commands."""
        lines = page.splitlines()
        out = []
        for i, line in enumerate(lines[:-1]):
            if line.strip() == ".TP":
                tag = re.sub(r"\\f[BIRP]|^\.[BIR]+ |\"", " ", lines[i + 1])
                out.append(set(re.split(r"[\s|\[\]]+", tag)) - {""})
        return out

    def test_repeaterctl_page_covers_help(self):
        page = self.page("repeaterctl")
        tags = self.tags(page)
        top = self.help(ctl_binary())
        for opt in self.options(top):
            self.assertIn(opt, page, f"repeaterctl {opt} (from --help) is not in man/repeaterctl.8.in")
        subcommands = 0
        for cmd in self.commands(top):
            self.assertTrue(any(cmd in t for t in tags), f"repeaterctl {cmd} (from --help) has no entry "
                            "in man/repeaterctl.8.in")
            sub = self.help(ctl_binary(), cmd)
            for opt in self.options(sub):
                self.assertIn(opt, page, f"repeaterctl {cmd} {opt} (from --help) is not in man/repeaterctl.8.in")
            for subcmd in self.commands(sub):
                subcommands += 1
                self.assertTrue(any({cmd, subcmd} <= t for t in tags), f"repeaterctl {cmd} {subcmd} (from "
                                "--help) has no entry in man/repeaterctl.8.in")
                for opt in self.options(self.help(ctl_binary(), cmd, subcmd)):
                    self.assertIn(opt, page, f"repeaterctl {cmd} {subcmd} {opt} (from --help) is not "
                                  "in man/repeaterctl.8.in")
        self.assertGreater(subcommands, 0, "no subcommand in any --help: the check saw nothing")

    def test_pages_format_without_warnings(self):
        groff = shutil.which("groff")
        if groff is None:
            self.skipTest("groff is not installed (groff-base, scripts/deps.sh --test)")
        for name in ("repeaterd", "repeaterctl"):
            p = run([groff, "-man", "-Tutf8", "-ww", "-z", SOURCE_DIR / "man" / f"{name}.8.in"],
                    env={"LC_ALL": "C.UTF-8"})
            self.assertEqual(p.stderr, "", f"groff warns about man/{name}.8.in")


# What the package must hold, with its mode. Directories are not listed.
EXPECTED_FILES = {
    "./usr/bin/repeaterd": 0o755,
    "./usr/bin/repeaterctl": 0o755,
    "./usr/lib/systemd/system/repeaterd.service": 0o644,
    "./usr/lib/sysusers.d/repeaterd.conf": 0o644,
    "./usr/lib/tmpfiles.d/repeaterd.conf": 0o644,
    "./etc/repeaterd/repeaterd.yaml": 0o644,
    "./etc/repeaterd/environment": 0o600,
    "./etc/logrotate.d/repeaterd": 0o644,
    "./usr/share/man/man8/repeaterd.8.gz": 0o644,
    "./usr/share/man/man8/repeaterctl.8.gz": 0o644,
    "./usr/share/doc/repeaterd/README.md": 0o644,
    "./usr/share/doc/repeaterd/LICENSE": 0o644,
    "./usr/share/doc/repeaterd/docs/configuration.md": 0o644,
    "./usr/share/doc/repeaterd/docs/operations.md": 0o644,
    "./usr/share/doc/repeaterd/examples/example.yaml": 0o644,
}
CONFFILES = ["/etc/repeaterd/repeaterd.yaml", "/etc/repeaterd/environment", "/etc/logrotate.d/repeaterd"]


class DebianPackage(unittest.TestCase):
    """cpack -G DEB in the build tree, then dpkg-deb and dpkg --root."""

    deb: Path

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="repeaterd-package-"))
        config = BUILD_DIR / "CPackConfig.cmake"
        if not config.exists():
            raise AssertionError(f"{config} is missing: is REPEATERD_BUILD_DIR ({BUILD_DIR}) a configured build tree?")
        for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} is not installed (scripts/deps.sh --test installs dpkg-dev)")
        # cpack installs the built tree (it does not build): into its own directory here, so the
        # build tree gets no _CPack_Packages and a test run leaves no .deb behind.
        out = cls.tmp / "cpack"
        run(["cpack", "-G", "DEB", "--config", config, "-B", out], timeout=300, cwd=BUILD_DIR)
        debs = sorted(out.glob("*.deb"))
        if len(debs) != 1:
            raise AssertionError(f"cpack made {debs}, not one .deb")
        cls.deb = debs[0]

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("REPEATERD_KEEP_TMP"):
            print(f"\n[kept temp dir {cls.tmp}]")
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def field(self, name: str) -> str:
        return run(["dpkg-deb", "-f", self.deb, name]).stdout.strip()

    def test_file_name_and_control_fields(self):
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.assertEqual(self.deb.name, f"repeaterd_{self.field('Version')}_{arch}.deb")
        self.assertRegex(self.field("Version"), r"^\d+\.\d+\.\d+-1$")
        self.assertEqual(self.field("Package"), "repeaterd")
        depends = [d.strip().split(" ")[0] for d in self.field("Depends").split(",")]
        # From dpkg-shlibdeps: the C and C++ runtimes and the libraries repeaterd links.
        for lib in ("systemd", "libc6", "libstdc++6", "libsqlite3-0", "libssl3", "libsystemd0", "libcurl4"):
            self.assertIn(lib, depends, f"Depends: {self.field('Depends')}")
        self.assertIn("logrotate", self.field("Recommends"))

    def test_contents(self):
        listing = run(["dpkg-deb", "-c", self.deb]).stdout
        entries = {}
        for line in listing.splitlines():
            perms, owner, _size, _date, _time, path = line.split(None, 5)
            path = path.split(" -> ")[0]
            entries[path] = (perms, owner)
            self.assertEqual(owner, "root/root", f"{path} is not owned by root")
        for path, mode in EXPECTED_FILES.items():
            self.assertIn(path, entries, f"{path} is not in the package:\n{listing}")
            self.assertEqual(entries[path][0], "-" + stat.filemode(mode)[1:], f"mode of {path}")
        for path in entries:
            self.assertFalse(path.startswith("./usr/local/"), f"{path}: a package stays out of /usr/local")
        # Nothing enables the service.
        self.assertFalse([p for p in entries if ".wants/" in p], "the package enables a unit")

    def test_control_archive(self):
        info = run(["dpkg-deb", "-I", self.deb]).stdout
        for script in ("postinst", "prerm", "postrm", "conffiles"):
            self.assertRegex(info, rf"\n\s+\d+ bytes,\s+\d+ lines\s+\*?\s+{script}\b", f"no {script}:\n{info}")
        conffiles = run(["dpkg-deb", "-I", self.deb, "conffiles"]).stdout.split()
        self.assertEqual(sorted(conffiles), sorted(CONFFILES))
        postinst = run(["dpkg-deb", "-I", self.deb, "postinst"]).stdout
        postinst = re.sub(r"(?m)^\s*#.*$", "", postinst)   # the comments say how to enable it
        self.assertNotRegex(postinst, r"systemctl\s+(enable|start)\b|deb-systemd-helper\s+enable",
                            "the package must not enable or start repeaterd")

    def test_unit_names_the_installed_binary(self):
        unit = run(["sh", "-c", f"dpkg-deb --fsys-tarfile '{self.deb}' | "
                    "tar -xOf - ./usr/lib/systemd/system/repeaterd.service"]).stdout
        self.assertRegex(unit, r"(?m)^ExecStart=/usr/bin/repeaterd --config /etc/repeaterd/repeaterd.yaml$")
        self.assertNotIn("/usr/local", unit)
        self.assertNotRegex(unit, r"@[A-Za-z_]+@", "an unsubstituted @VAR@ in the unit")

    def test_install_reinstall_remove_purge_into_a_scratch_root(self):
        if os.geteuid() != 0:
            self.skipTest("dpkg --root needs root")
        root = self.tmp / "root"
        admin = root / "var/lib/dpkg"
        for d in ("info", "updates", "triggers"):
            (admin / d).mkdir(parents=True)
        (admin / "status").write_text("")
        (admin / "available").write_text("")
        (root / "etc").mkdir()
        # A root's own accounts, as any Debian system has them.
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")
        dpkg = ["dpkg", f"--root={root}", f"--log={self.tmp / 'dpkg.log'}", "--force-script-chrootless",
                "--force-depends"]

        run([*dpkg, "-i", self.deb])
        status = run([*dpkg, "-s", "repeaterd"]).stdout
        self.assertIn("Status: install ok installed", status)

        for path in EXPECTED_FILES:
            self.assertTrue((root / path).is_file(), f"{path} was not installed")
        exe = root / "usr/bin/repeaterd"
        version = re.search(r"repeaterd (\d+\.\d+\.\d+)", run([exe, "--version"]).stdout)
        self.assertTrue(version, "the installed repeaterd does not say its version")
        for page in ("repeaterd", "repeaterctl"):
            text = gzip.decompress((root / f"usr/share/man/man8/{page}.8.gz").read_bytes()).decode()
            self.assertIn(f'"repeaterd {version[1]}"', text, f"{page}(8) does not carry the version")
        # The installed template, checked by the installed binary.
        p = check_config(root / "etc/repeaterd/repeaterd.yaml", TEMPLATE_ENV, exe)
        self.assertEqual(p.returncode, 0, p.stderr)

        # postinst: systemd-sysusers made the user, systemd-tmpfiles its directories.
        users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
        self.assertIn("repeaterd", users, "postinst did not create the repeaterd user")
        user = users["repeaterd"]
        uid, gid = int(user[2]), int(user[3])
        self.assertTrue(0 < uid < 1000, f"repeaterd is not a system user: {user}")
        self.assertEqual((user[5], user[6]), ("/var/lib/repeaterd", "/usr/sbin/nologin"))
        groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
        self.assertEqual(int(groups["repeaterd"][2]), gid)
        for d in ("var/lib/repeaterd", "var/log/repeaterd"):
            st = (root / d).stat()
            self.assertTrue(stat.S_ISDIR(st.st_mode), f"/{d} was not created")
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o750, f"mode of /{d}")
            self.assertEqual((st.st_uid, st.st_gid), (uid, gid), f"owner of /{d}")
        self.assertEqual(stat.S_IMODE((root / "etc/repeaterd/environment").stat().st_mode), 0o600)
        # ... and enabled nothing.
        systemd_etc = root / "etc/systemd/system"
        linked = [str(p) for p in systemd_etc.rglob("*")] if systemd_etc.exists() else []
        self.assertEqual(linked, [], "the package enabled a unit")
        self.assertFalse((systemd_etc / "multi-user.target.wants/repeaterd.service").exists())

        # Reinstall (an upgrade's path through postinst): the admin's edits to a conffile stay,
        # and the user is not made twice.
        config = root / "etc/repeaterd/repeaterd.yaml"
        edited = config.read_text().replace("port: 8080", "port: 8090")
        config.write_text(edited)
        run([*dpkg, "-i", self.deb])
        self.assertEqual(config.read_text(), edited, "a reinstall overwrote the admin's config")
        self.assertEqual((root / "etc/passwd").read_text().count("\nrepeaterd:"), 1)

        # Remove: the programs go; the configuration, the queue and the logs stay.
        (root / "var/lib/repeaterd/repeaterd.db").write_text("queue")
        (root / "var/log/repeaterd/events.log").write_text("{}\n")
        run([*dpkg, "-r", "repeaterd"])
        self.assertFalse(exe.exists())
        self.assertFalse((root / "usr/lib/systemd/system/repeaterd.service").exists())
        self.assertTrue(config.exists(), "remove deleted a conffile")
        self.assertTrue((root / "var/lib/repeaterd/repeaterd.db").exists())

        # Purge (after the admin enabled it): the configuration, the logs and the enablement
        # go; the queue database stays (it may hold submissions not forwarded yet).
        wants = systemd_etc / "multi-user.target.wants"
        wants.mkdir(parents=True)
        (wants / "repeaterd.service").symlink_to("/usr/lib/systemd/system/repeaterd.service")
        run([*dpkg, "-P", "repeaterd"])
        for path in CONFFILES:
            self.assertFalse((root / path.lstrip("/")).exists(), f"purge left {path}")
        self.assertFalse((root / "etc/repeaterd").exists(), "purge left /etc/repeaterd")
        self.assertFalse((root / "var/log/repeaterd").exists(), "purge left the logs")
        self.assertFalse((wants / "repeaterd.service").is_symlink(), "purge left the service enabled")
        self.assertTrue((root / "var/lib/repeaterd/repeaterd.db").exists(), "purge deleted the queue")
        self.assertNotIn("Status: install", run([*dpkg, "-s", "repeaterd"], check=False).stdout)


if __name__ == "__main__":
    unittest.main()
