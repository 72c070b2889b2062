package packaging

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const (
	daemonUnit = "dbcert-agent.service"
	onceUnit   = "dbcert-agent-once.service"
	// testVersion is the version the packages under test are built with.
	testVersion = "1.2.3~test"
	// maxExposure is the highest "systemd-analyze security" exposure score accepted
	// for the units (0 = fully locked down, 10 = unprotected; 2.6 when written).
	maxExposure = 3.0
)

// skipOrFail skips the test, or fails it when DBCERT_E2E=require (CI), where every
// tool the packaging tests need is installed.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("DBCERT_E2E") == "require" {
		t.Fatalf(format+" (DBCERT_E2E=require)", args...)
	}
	t.Skipf(format, args...)
}

func lookPath(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		skipOrFail(t, "%s not found: %v", tool, err)
	}
	return p
}

// run runs a command and returns its stdout; it fails the test on a non-zero exit.
func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("%s: stderr:\n%s", strings.Join(cmd.Args, " "), stderr.String())
	}
	return stdout.String()
}

// moduleRoot is the directory of go.mod.
var moduleRoot = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
})

// unit is a parsed unit file: section -> key -> values, in file order.
type unit map[string]map[string][]string

// get returns the value of the last assignment of key, and whether there is one.
func (u unit) get(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			key = strings.TrimSpace(key)
			u[section][key] = append(u[section][key], strings.TrimSpace(value))
		}
	}
	return u
}

// TestUnitHardening checks the directives the units must carry. The sandbox of the
// two units is the same: both run the agent's writes and hooks.
func TestUnitHardening(t *testing.T) {
	type directive struct{ section, key, value string }
	sandbox := []directive{
		// Root, but only with what sinks and hooks need (see the unit's comments).
		{"Service", "CapabilityBoundingSet", "CAP_CHOWN CAP_DAC_READ_SEARCH CAP_FOWNER CAP_KILL"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ReadWritePaths", "/var/lib/dbcert-agent"},
		{"Service", "ProtectHome", "read-only"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "StateDirectory", "dbcert-agent"},
		{"Service", "StateDirectoryMode", "0755"},
		{"Service", "ConfigurationDirectory", "dbcert-agent"},
		{"Service", "UMask", "0022"},
		{"Service", "PrivateDevices", "yes"},
		{"Service", "ProtectClock", "yes"},
		{"Service", "ProtectHostname", "yes"},
		{"Service", "ProtectKernelTunables", "yes"},
		{"Service", "ProtectKernelModules", "yes"},
		{"Service", "ProtectKernelLogs", "yes"},
		{"Service", "ProtectControlGroups", "yes"},
		{"Service", "LockPersonality", "yes"},
		{"Service", "MemoryDenyWriteExecute", "yes"},
		{"Service", "RestrictRealtime", "yes"},
		{"Service", "RestrictSUIDSGID", "yes"},
		{"Service", "RestrictNamespaces", "yes"},
		{"Service", "PrivateMounts", "yes"},
		{"Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"},
		{"Service", "SystemCallArchitectures", "native"},
		{"Service", "SystemCallFilter", "@system-service"},
		{"Service", "SystemCallErrorNumber", "EPERM"},
		{"Service", "KillMode", "mixed"},
		{"Unit", "Wants", "network-online.target"},
		{"Unit", "After", "network-online.target"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	// Directives that would break the agent: chown to real users needs the host's user
	// namespace and fixed uids; ProtectProc hides the /proc entries the signal hook
	// uses to check who runs the target process; a User= belongs in a drop-in.
	forbidden := []string{"DynamicUser", "PrivateUsers", "ProtectProc", "User", "AmbientCapabilities"}
	units := map[string][]directive{
		daemonUnit: append([]directive{
			{"Service", "Type", "notify"},
			{"Service", "ExecStart", "/usr/bin/dbcert-agent run -config /etc/dbcert-agent/agent.hcl"},
			{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
			{"Service", "Restart", "on-failure"},
			{"Service", "RestartPreventExitStatus", "2"},
			// A crash or the watchdog's SIGABRT must not look like a config error
			// (exit 2): TestAbortIsRestarted in the root package runs the binary so.
			{"Service", "Environment", "GOTRACEBACK=crash"},
			{"Service", "LimitCORE", "0"},
			{"Service", "WatchdogSec", "60s"},
			{"Service", "TimeoutStopSec", "3min"},
			{"Service", "RuntimeDirectory", "dbcert-agent"},
			{"Unit", "After", onceUnit},
		}, sandbox...),
		onceUnit: append([]directive{
			{"Service", "Type", "oneshot"},
			{"Service", "RemainAfterExit", "yes"},
			{"Service", "ExecStart", "/usr/bin/dbcert-agent once -config /etc/dbcert-agent/agent.hcl -timeout 2m"},
			{"Service", "TimeoutStartSec", "3min"},
		}, sandbox...),
	}
	for name, want := range units {
		t.Run(name, func(t *testing.T) {
			u := parseUnit(t, filepath.Join("systemd", name))
			for _, d := range want {
				got := u[d.section][d.key]
				found := false
				for _, v := range got {
					found = found || v == d.value
				}
				if !found {
					t.Errorf("[%s] %s=%s missing (have %q)", d.section, d.key, d.value, got)
				}
			}
			for _, key := range forbidden {
				if v, ok := u.get("Service", key); ok {
					t.Errorf("[Service] %s=%s must not be set in the shipped unit", key, v)
				}
			}
		})
	}
}

// workDir holds what the tests build once and share; TestMain removes it.
var workDir string

func TestMain(m *testing.M) {
	var err error
	if workDir, err = os.MkdirTemp("", "dbcert-packaging-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(workDir)
	os.Exit(code)
}

// agentBinary builds the agent once per test run.
var agentBinary = sync.OnceValues(func() (string, error) {
	r, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(workDir, "dbcert-agent")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = r
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", errors.New("go build: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

// TestSystemdAnalyze runs systemd-analyze verify and security on copies of the units
// whose ExecStart= names a freshly built binary (verify insists that it exists).
func TestSystemdAnalyze(t *testing.T) {
	analyze := lookPath(t, "systemd-analyze")
	bin, err := agentBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, name := range []string{daemonUnit, onceUnit} {
		data, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("/usr/bin/dbcert-agent "), []byte(bin+" "))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}

	t.Run("verify", func(t *testing.T) {
		cmd := exec.Command(analyze, append([]string{"verify"}, paths...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
		}
		// Warnings about the host's own units are not ours; warnings about ours are.
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, daemonUnit) || strings.Contains(line, onceUnit) {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	})

	t.Run("security", func(t *testing.T) {
		exposure := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`)
		for _, p := range paths {
			out, err := exec.Command(analyze, "security", "--offline=true", p).CombinedOutput()
			if bytes.Contains(out, []byte("--offline")) || bytes.Contains(out, []byte("unrecognized option")) {
				t.Skipf("systemd-analyze security --offline is not supported here (systemd < 250): %s", out)
			}
			m := exposure.FindSubmatch(out)
			if err != nil || m == nil {
				t.Fatalf("systemd-analyze security %s: %v\n%s", p, err, out)
			}
			score, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("%s: exposure %.1f", filepath.Base(p), score)
			if score > maxExposure {
				t.Errorf("%s: exposure %.1f is above %.1f; something lost its hardening:\n%s", filepath.Base(p), score, maxExposure, out)
			}
		}
	})
}

// packages holds the result of one build.sh run shared by the package tests.
type packages struct {
	deb, rpm  string
	commit    string // what "dbcert-agent version" must print
	skip, err string
}

var built = sync.OnceValue(func() packages {
	r, err := moduleRoot()
	if err != nil {
		return packages{err: err.Error()}
	}
	dir := filepath.Join(workDir, "dist")
	p := packages{commit: "unknown"}
	git := exec.Command("git", "rev-parse", "--verify", "-q", "HEAD")
	git.Dir = r
	if out, err := git.Output(); err == nil {
		p.commit = strings.TrimSpace(string(out))
	}
	cmd := exec.Command("bash", filepath.Join(r, "packaging", "build.sh"), dir)
	cmd.Env = append(os.Environ(), "VERSION="+testVersion, "COMMIT=") // build.sh takes the commit from git
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == 3:
		p.skip = "build.sh could not build nfpm (offline?):\n" + string(out)
		return p
	case err != nil:
		p.err = "build.sh: " + err.Error() + "\n" + string(out)
		return p
	}
	p.deb, p.rpm = onlyMatch(dir, "*.deb"), onlyMatch(dir, "*.rpm")
	if p.deb == "" || p.rpm == "" {
		p.err = "build.sh did not write exactly one .deb and one .rpm:\n" + string(out)
	}
	return p
})

// onlyMatch returns the one file in dir matching pattern, or "".
func onlyMatch(dir, pattern string) string {
	if m, _ := filepath.Glob(filepath.Join(dir, pattern)); len(m) == 1 {
		return m[0]
	}
	return ""
}

func buildPackages(t *testing.T) packages {
	t.Helper()
	p := built()
	switch {
	case p.skip != "":
		skipOrFail(t, "%s", p.skip)
	case p.err != "":
		t.Fatal(p.err)
	}
	return p
}

// debArch is the Debian name of a Go architecture, rpmArch the RPM one.
func debArch(goarch string) string {
	switch goarch {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	}
	return goarch
}

func rpmArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i386"
	}
	return goarch
}

// TestPackages builds both packages with build.sh and checks them.
func TestPackages(t *testing.T) {
	dpkgDeb := lookPath(t, "dpkg-deb")
	p := buildPackages(t)

	t.Run("deb contents", func(t *testing.T) {
		listing := run(t, exec.Command(dpkgDeb, "-c", p.deb))
		want := map[string]string{ // path -> mode and owner
			"./usr/bin/dbcert-agent":                             "-rwxr-xr-x root/root",
			"./usr/lib/systemd/system/dbcert-agent.service":      "-rw-r--r-- root/root",
			"./usr/lib/systemd/system/dbcert-agent-once.service": "-rw-r--r-- root/root",
			"./usr/lib/sysusers.d/dbcert-agent.conf":             "-rw-r--r-- root/root",
			"./usr/lib/tmpfiles.d/dbcert-agent.conf":             "-rw-r--r-- root/root",
			"./etc/dbcert-agent/agent.hcl":                       "-rw-r--r-- root/root",
		}
		for _, line := range strings.Split(listing, "\n") {
			f := strings.Fields(line)
			if len(f) < 6 {
				continue
			}
			path := f[len(f)-1]
			if mode, ok := want[path]; ok {
				if got := f[0] + " " + f[1]; got != mode {
					t.Errorf("%s: %s, want %s", path, got, mode)
				}
				delete(want, path)
			}
		}
		for path := range want {
			t.Errorf("%s is not in the package:\n%s", path, listing)
		}
	})

	t.Run("deb control", func(t *testing.T) {
		info := run(t, exec.Command(dpkgDeb, "-I", p.deb))
		for _, member := range []string{"conffiles", "postinst", "prerm", "postrm", "md5sums"} {
			if !regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+` + member + `\b`).MatchString(info) {
				t.Errorf("control member %s missing:\n%s", member, info)
			}
		}
		if conffiles := run(t, exec.Command(dpkgDeb, "-I", p.deb, "conffiles")); strings.TrimSpace(conffiles) != "/etc/dbcert-agent/agent.hcl" {
			t.Errorf("conffiles = %q, want /etc/dbcert-agent/agent.hcl", conffiles)
		}
		fields := run(t, exec.Command(dpkgDeb, "-f", p.deb, "Package", "Version", "Architecture", "License"))
		want := "Package: dbcert-agent\nVersion: " + testVersion + "-1\nArchitecture: " + debArch(runtime.GOARCH) + "\nLicense: Apache-2.0\n"
		if fields != want {
			t.Errorf("dpkg-deb -f:\n%s\nwant:\n%s", fields, want)
		}
	})

	t.Run("rpm", func(t *testing.T) {
		rpm := lookPath(t, "rpm")
		got := run(t, exec.Command(rpm, "-qp", "--qf", `%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}\n`, p.rpm))
		if want := "dbcert-agent " + testVersion + " 1 " + rpmArch(runtime.GOARCH) + " Apache-2.0\n"; got != want {
			t.Errorf("rpm header: %q, want %q", got, want)
		}
		files := run(t, exec.Command(rpm, "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME} %{FILENAMES}\n]`, p.rpm))
		for _, want := range []string{
			"cn -rw-r--r-- root /etc/dbcert-agent/agent.hcl", // %config(noreplace)
			" -rwxr-xr-x root /usr/bin/dbcert-agent",
			" -rw-r--r-- root /usr/lib/systemd/system/dbcert-agent.service",
			" -rw-r--r-- root /usr/lib/systemd/system/dbcert-agent-once.service",
			" -rw-r--r-- root /usr/lib/sysusers.d/dbcert-agent.conf",
			" -rw-r--r-- root /usr/lib/tmpfiles.d/dbcert-agent.conf",
		} {
			if !strings.Contains(files, want+"\n") {
				t.Errorf("rpm files: no line %q in:\n%s", want, files)
			}
		}
		scripts := run(t, exec.Command(rpm, "-qp", "--scripts", p.rpm))
		for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"} {
			if !strings.Contains(scripts, s) {
				t.Errorf("rpm --scripts: no %s in:\n%s", s, scripts)
			}
		}
	})

	t.Run("unpacked", func(t *testing.T) { testUnpacked(t, p, dpkgDeb) })
	t.Run("scripts without systemd", func(t *testing.T) { testScriptsBare(t, p, dpkgDeb) })
	t.Run("scripts with systemd", func(t *testing.T) { testScriptsSystemd(t, p, dpkgDeb) })
	t.Run("dpkg lifecycle", func(t *testing.T) { testDpkgLifecycle(t, p) })
}

// unpack extracts the .deb's files (dpkg-deb -x) and control members (dpkg-deb -e).
func unpack(t *testing.T, p packages, dpkgDeb string) (root, ctrl string) {
	t.Helper()
	dir := t.TempDir()
	root, ctrl = filepath.Join(dir, "root"), filepath.Join(dir, "control")
	run(t, exec.Command(dpkgDeb, "-x", p.deb, root))
	run(t, exec.Command(dpkgDeb, "-e", p.deb, ctrl))
	return root, ctrl
}

// testUnpacked checks the unpacked files against the repository, and that the unpacked
// binary validates the unpacked example config and reports the build's version.
func testUnpacked(t *testing.T, p packages, dpkgDeb string) {
	root, ctrl := unpack(t, p, dpkgDeb)
	for src, dst := range map[string]string{
		"systemd/" + daemonUnit:         filepath.Join(root, "usr/lib/systemd/system", daemonUnit),
		"systemd/" + onceUnit:           filepath.Join(root, "usr/lib/systemd/system", onceUnit),
		"systemd/dbcert-agent.sysusers": filepath.Join(root, "usr/lib/sysusers.d/dbcert-agent.conf"),
		"systemd/dbcert-agent.tmpfiles": filepath.Join(root, "usr/lib/tmpfiles.d/dbcert-agent.conf"),
		"../agent.hcl.example":          filepath.Join(root, "etc/dbcert-agent/agent.hcl"),
		"scripts/postinstall.sh":        filepath.Join(ctrl, "postinst"),
		"scripts/preremove.sh":          filepath.Join(ctrl, "prerm"),
		"scripts/postremove.sh":         filepath.Join(ctrl, "postrm"),
	} {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s in the package differs from packaging/%s (%v)", dst, src, err)
		}
	}
	sysusers, _ := os.ReadFile(filepath.Join(root, "usr/lib/sysusers.d/dbcert-agent.conf"))
	if !regexp.MustCompile(`(?m)^u dbcert-agent - "[^"]+" /var/lib/dbcert-agent$`).Match(sysusers) {
		t.Errorf("sysusers.d entry for the dbcert-agent user missing:\n%s", sysusers)
	}
	tmpfiles, _ := os.ReadFile(filepath.Join(root, "usr/lib/tmpfiles.d/dbcert-agent.conf"))
	if !regexp.MustCompile(`(?m)^d /var/lib/dbcert-agent 0755 root root -$`).Match(tmpfiles) {
		t.Errorf("tmpfiles.d entry for /var/lib/dbcert-agent missing:\n%s", tmpfiles)
	}

	agent := filepath.Join(root, "usr/bin/dbcert-agent")
	run(t, exec.Command(agent, "validate", "-config", filepath.Join(root, "etc/dbcert-agent/agent.hcl")))
	version := run(t, exec.Command(agent, "version"))
	wantVersion := regexp.MustCompile(`^dbcert-agent ` + regexp.QuoteMeta(testVersion) + ` \(commit ` + regexp.QuoteMeta(p.commit) +
		`, go1\.\d+[^,]*, linux/` + runtime.GOARCH + `\)\n$`)
	if !wantVersion.MatchString(version) {
		t.Errorf("version printed %q, want %s", version, wantVersion)
	}
}

// scriptCall is one maintainer script run and the systemctl calls it must make
// ("ROOT" stands for the throwaway root).
type scriptCall struct {
	script string
	args   []string
	want   []string
}

// The calls dpkg and rpm make on install, upgrade, removal and purge, in their order.
var scriptCalls = []scriptCall{
	// dpkg: fresh install.
	{"postinst", []string{"configure", ""}, []string{"--root=ROOT --no-reload enable dbcert-agent.service", "daemon-reload"}},
	// dpkg: upgrade (old prerm, old postrm, new postinst).
	{"prerm", []string{"upgrade", "2.0.0-1"}, nil},
	{"postrm", []string{"upgrade", "2.0.0-1"}, []string{"daemon-reload"}},
	{"postinst", []string{"configure", "1.0.0-1"}, []string{"daemon-reload", "try-restart dbcert-agent.service"}},
	// dpkg: removal, then installed again from the config-files state, then purge.
	{"prerm", []string{"remove"}, []string{
		"stop dbcert-agent.service dbcert-agent-once.service",
		"--root=ROOT --no-reload disable dbcert-agent.service dbcert-agent-once.service"}},
	{"postrm", []string{"remove"}, []string{"daemon-reload"}},
	{"postinst", []string{"configure", "2.0.0-1"}, []string{"--root=ROOT --no-reload enable dbcert-agent.service", "daemon-reload"}},
	{"postinst", []string{"configure", "2.0.0-1"}, []string{"daemon-reload", "try-restart dbcert-agent.service"}},
	{"prerm", []string{"remove"}, []string{
		"stop dbcert-agent.service dbcert-agent-once.service",
		"--root=ROOT --no-reload disable dbcert-agent.service dbcert-agent-once.service"}},
	{"postrm", []string{"remove"}, []string{"daemon-reload"}},
	{"postrm", []string{"purge"}, []string{"daemon-reload"}},
	// rpm: install, upgrade (new %post, then old %preun and %postun), erase.
	{"postinst", []string{"1"}, []string{"--root=ROOT --no-reload enable dbcert-agent.service", "daemon-reload"}},
	{"postinst", []string{"2"}, []string{"daemon-reload", "try-restart dbcert-agent.service"}},
	{"prerm", []string{"1"}, nil},
	{"postrm", []string{"1"}, []string{"daemon-reload"}},
	{"prerm", []string{"0"}, []string{
		"stop dbcert-agent.service dbcert-agent-once.service",
		"--root=ROOT --no-reload disable dbcert-agent.service dbcert-agent-once.service"}},
	{"postrm", []string{"0"}, []string{"daemon-reload"}},
}

// toolDir makes a directory of links to the given tools, for a PATH holding only those.
func toolDir(t *testing.T, tools ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, tool := range tools {
		if p, err := exec.LookPath(tool); err == nil {
			if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// scriptTools are the only commands the maintainer scripts may run unguarded.
var scriptTools = []string{"grep", "mkdir", "chmod", "rm"}

// runScript runs a maintainer script as dpkg and rpm do, with DPKG_ROOT set so nothing
// outside the throwaway root is touched, and the given PATH.
func runScript(t *testing.T, dir, root, path string, c scriptCall) {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{filepath.Join(dir, c.script)}, c.args...)...)
	cmd.Env = []string{"PATH=" + path, "DPKG_ROOT=" + root}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s %q: %v\n%s", c.script, c.args, err, out)
		return
	}
	t.Logf("%s %q: ok\n%s", c.script, c.args, out)
}

// testScriptsBare runs the maintainer scripts with none of systemctl, systemd-sysusers,
// systemd-tmpfiles or useradd on PATH (a container or chroot): every call must exit 0,
// and /var/lib/dbcert-agent must exist after the install.
func testScriptsBare(t *testing.T, p packages, dpkgDeb string) {
	root, ctrl := unpack(t, p, dpkgDeb)
	path := toolDir(t, scriptTools...)
	for i, c := range scriptCalls {
		runScript(t, ctrl, root, path, c)
		if i == 0 {
			if fi, err := os.Stat(filepath.Join(root, "var/lib/dbcert-agent")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
				t.Errorf("/var/lib/dbcert-agent after the install: %v, %v; want a 0755 directory", fi, err)
			}
		}
	}
}

// testScriptsSystemd runs the maintainer scripts with a systemctl that only records
// its arguments, and checks each script makes the calls it should: enable (not start)
// on install, try-restart on upgrade, stop and disable only on removal, daemon-reload
// whenever unit files changed. "live" pretends a running systemd manages the system;
// "offline" is the real situation of the test (DPKG_ROOT set), where only the offline
// "systemctl --root" calls may happen.
func testScriptsSystemd(t *testing.T, p packages, dpkgDeb string) {
	root, ctrl := unpack(t, p, dpkgDeb)
	path := toolDir(t, scriptTools...)
	calls := filepath.Join(t.TempDir(), "calls")
	spy := "#!/bin/sh\necho \"$*\" >>'" + calls + "'\n"
	if err := os.WriteFile(filepath.Join(path, "systemctl"), []byte(spy), 0o755); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, scripts string, want func(scriptCall) []string) {
		for _, c := range scriptCalls {
			runScript(t, scripts, root, path, c)
			data, _ := os.ReadFile(calls)
			os.Remove(calls)
			got := strings.TrimSuffix(strings.ReplaceAll(string(data), root, "ROOT"), "\n")
			if w := strings.Join(want(c), "\n"); got != w {
				t.Errorf("%s %q called systemctl with\n\t%s\nwant\n\t%s", c.script, c.args,
					strings.ReplaceAll(got, "\n", "\n\t"), strings.ReplaceAll(w, "\n", "\n\t"))
			}
		}
	}

	t.Run("offline", func(t *testing.T) {
		check(t, ctrl, func(c scriptCall) (offline []string) {
			for _, call := range c.want {
				if strings.HasPrefix(call, "--root=ROOT ") {
					offline = append(offline, call)
				}
			}
			return offline
		})
	})

	t.Run("live", func(t *testing.T) {
		// A copy of the scripts whose live() says yes: the real one looks for
		// /run/systemd/system, which a test cannot create.
		const liveCheck = `live() { [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; }`
		scripts := t.TempDir()
		for _, name := range []string{"postinst", "prerm", "postrm"} {
			data, err := os.ReadFile(filepath.Join(ctrl, name))
			if err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(data, []byte(liveCheck)); n != 1 {
				t.Fatalf("%s defines %q %d times, want once", name, liveCheck, n)
			}
			data = bytes.Replace(data, []byte(liveCheck), []byte("live() { true; }"), 1)
			if err := os.WriteFile(filepath.Join(scripts, name), data, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		check(t, scripts, func(c scriptCall) []string { return c.want })
	})
}

// testDpkgLifecycle installs, upgrades, removes, reinstalls and purges the .deb with
// dpkg --root into a throwaway root. --force-script-chrootless runs the maintainer
// scripts on this host with DPKG_ROOT set, so systemd-sysusers, systemd-tmpfiles and
// "systemctl --root" act offline inside the root: no systemd needs to run.
func testDpkgLifecycle(t *testing.T, p packages) {
	dpkg := lookPath(t, "dpkg")
	if os.Geteuid() != 0 {
		t.Skip("dpkg --root needs root")
	}
	root := t.TempDir()
	for _, d := range []string{"etc", "var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dpkgDo := func(args ...string) {
		t.Helper()
		cmd := exec.Command(dpkg, append([]string{"--root=" + root, "--force-script-chrootless", "--force-confold", "--log=/dev/null"}, args...)...)
		t.Logf("dpkg %s:\n%s", strings.Join(args, " "), run(t, cmd))
	}
	path := func(rel string) string { return filepath.Join(root, rel) }
	exists := func(rel string) bool { _, err := os.Lstat(path(rel)); return err == nil }
	have := func(tool string) bool { _, err := exec.LookPath(tool); return err == nil }
	wants := "etc/systemd/system/multi-user.target.wants/" + daemonUnit
	checkEnabled := func(when string, want bool) {
		t.Helper()
		if have("systemctl") && exists(wants) != want {
			t.Errorf("%s: %s enabled = %v, want %v", when, daemonUnit, exists(wants), want)
		}
	}

	dpkgDo("-i", p.deb)
	checkEnabled("fresh install", true)
	if have("systemd-sysusers") {
		passwd, _ := os.ReadFile(path("etc/passwd"))
		if !regexp.MustCompile(`(?m)^dbcert-agent:x:\d+:\d+:[^:]*:/var/lib/dbcert-agent:`).Match(passwd) {
			t.Errorf("no dbcert-agent user in the root's /etc/passwd:\n%s", passwd)
		}
	}
	if fi, err := os.Stat(path("var/lib/dbcert-agent")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("/var/lib/dbcert-agent: %v %v, want a 0755 directory", fi, err)
	}

	// An upgrade keeps the administrator's config and choice to disable the service.
	f, err := os.OpenFile(path("etc/dbcert-agent/agent.hcl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# edited by the administrator\n")
	f.Close()
	os.Remove(path(wants))
	dpkgDo("-i", p.deb) // same version again: dpkg runs the upgrade path
	if cfg, _ := os.ReadFile(path("etc/dbcert-agent/agent.hcl")); !bytes.HasSuffix(cfg, []byte("# edited by the administrator\n")) {
		t.Error("the upgrade replaced the edited /etc/dbcert-agent/agent.hcl")
	}
	checkEnabled("upgrade of a disabled service", false)

	dpkgDo("-r", "dbcert-agent")
	if exists("usr/bin/dbcert-agent") || !exists("etc/dbcert-agent/agent.hcl") {
		t.Error("after remove: the binary must be gone and the config kept")
	}
	dpkgDo("-i", p.deb)
	checkEnabled("install after remove", true)
	dpkgDo("-P", "dbcert-agent")
	if exists("etc/dbcert-agent/agent.hcl") || exists("var/lib/dbcert-agent/.package-removed") {
		t.Error("after purge: the config and the removal marker must be gone")
	}
	checkEnabled("purge", false)
}
