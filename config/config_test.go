package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testOptions resolve users and groups without the machine's user database and give
// env() a fixed environment.
func testOptions() Options {
	ids := map[string]int{"app": 1000, "root": 0}
	lookup := func(name string) (int, error) {
		if id, ok := ids[name]; ok {
			return id, nil
		}
		return 0, fmt.Errorf("unknown name %s", name)
	}
	env := map[string]string{"DBCERT_TEST_PROJECT": "env-proj", "KEYSTORE_PASS": "from-env"}
	return Options{
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		// file() reads nothing of the machine's: fuzzed and mutated configs could name
		// any path (a FIFO would block).
		ReadFile: func(path string, _ int64) ([]byte, error) {
			if strings.HasPrefix(path, "/nonexistent/") {
				return nil, fmt.Errorf("open %s: no such file or directory", path)
			}
			return []byte("content of " + filepath.Base(path)), nil
		},
		LookupUser:  lookup,
		LookupGroup: lookup,
	}
}

var locRE = regexp.MustCompile(`(?m)^testdata/invalid/[a-z0-9_]+\.hcl:\d+:\d+: error: `)

// TestInvalidConfigs loads every fixture in testdata/invalid and compares the rendered
// diagnostics with its .golden file (go test ./config -update rewrites them).
func TestInvalidConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hcl")
		t.Run(name, func(t *testing.T) {
			_, err := Load(f, testOptions())
			var de *DiagError
			if !errors.As(err, &de) {
				t.Fatalf("Load(%s) = %v, want *DiagError", f, err)
			}
			var buf bytes.Buffer
			if err := de.Render(&buf, 78); err != nil {
				t.Fatal(err)
			}
			got := buf.String()
			if strings.HasPrefix(name, "secret_") {
				// A literal secret is named by file:line:col but never echoed.
				if strings.Contains(got, "literal") && strings.Contains(got, "-literal") || strings.Contains(got, "EXAMPLEliteral") || strings.Contains(got, "hunter2") {
					t.Errorf("the diagnostic echoes the secret:\n%s", got)
				}
				if !regexp.MustCompile(`at testdata/invalid/[a-z0-9_]+\.hcl:\d+:\d+`).MatchString(got) {
					t.Errorf("the diagnostic does not name file:line:col:\n%s", got)
				}
			} else {
				if !locRE.MatchString(got) {
					t.Errorf("diagnostic has no file:line:col: prefix:\n%s", got)
				}
				if !strings.Contains(got, "  on "+f+" line ") {
					t.Errorf("diagnostic has no source context:\n%s", got)
				}
			}
			golden := strings.TrimSuffix(f, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -update)", err)
			}
			if got != string(want) {
				t.Errorf("diagnostics differ from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	src := `
instance "cloudsql" "orders" {
  project  = env("DBCERT_TEST_PROJECT")
  instance = "orders-pg"
  sink "file" { dir = "out/orders" }
  hook "exec" { command = ["/bin/true"] }
  hook "signal" { pid_file = "/run/x.pid" }
}`
	cfg, err := Parse("/etc/dbcert-agent/agent.hcl", []byte(src), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.LogLevel != slog.LevelInfo || cfg.Agent.LogFormat != "text" || cfg.Agent.Listen != "" {
		t.Errorf("agent defaults = %+v", cfg.Agent)
	}
	in := cfg.Instances[0]
	c := in.CloudSQL
	checks := []struct {
		name      string
		got, want any
	}{
		{"project from env()", c.Project, "env-proj"},
		{"endpoint", c.APIEndpoint, DefaultCloudSQLEndpoint},
		{"version", c.APIVersion, "v1beta4"},
		{"credentials = ADC", *c.Credentials, GoogleCredentials{}},
		{"renew fraction", in.Renewal.BeforeFraction, DefaultRenewFraction},
		{"key rotation every cert", in.Renewal.KeyMaxAge, time.Duration(0)},
		{"no schedule", in.Schedule == nil, true},
		{"sink dir relative to config", in.Sinks[0].Dir, "/etc/dbcert-agent/out/orders"},
		{"layout", in.Sinks[0].Layout, LayoutPEM},
		{"key mode", in.Sinks[0].KeyMode, os.FileMode(0o600)},
		{"uid", in.Sinks[0].UID, -1},
		{"gid", in.Sinks[0].GID, -1},
		{"exec timeout", in.Hooks[0].Exec.Timeout, 30 * time.Second},
		{"signal", in.Hooks[1].Signal.Signal, syscall.SIGHUP},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestValues(t *testing.T) {
	tests := []struct {
		name  string
		attrs string // inside the instance block
		sink  string // inside the sink block
		check func(t *testing.T, in *Instance)
	}{
		{"renew_before percent", `renew_before = "50%"`, "", func(t *testing.T, in *Instance) {
			if in.Renewal.BeforeFraction != 0.5 || in.Renewal.Before != 0 {
				t.Errorf("renewal = %+v", in.Renewal)
			}
		}},
		{"renew_before duration", `renew_before = "15m"`, "", func(t *testing.T, in *Instance) {
			if in.Renewal.Before != 15*time.Minute || in.Renewal.BeforeFraction != 0 {
				t.Errorf("renewal = %+v", in.Renewal)
			}
		}},
		{"key_rotation duration", `key_rotation = "24h"`, "", func(t *testing.T, in *Instance) {
			if in.Renewal.KeyMaxAge != 24*time.Hour {
				t.Errorf("key max age = %v", in.Renewal.KeyMaxAge)
			}
		}},
		{"schedule with CRON_TZ", `schedule = "CRON_TZ=Europe/Berlin 0 3 * * *"`, "", func(t *testing.T, in *Instance) {
			if in.Schedule == nil || in.Schedule.Spec != "CRON_TZ=Europe/Berlin 0 3 * * *" {
				t.Fatalf("schedule = %+v", in.Schedule)
			}
			from := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
			if next := in.Schedule.Next(from); !next.Equal(time.Date(2026, 1, 2, 2, 0, 0, 0, time.UTC)) {
				t.Errorf("next = %v", next)
			}
		}},
		{"schedule descriptor", `schedule = "@every 6h"`, "", func(t *testing.T, in *Instance) {
			if in.Schedule == nil {
				t.Fatal("no schedule")
			}
		}},
		{"v1 and loopback http endpoint", "api_version = \"v1\"\napi_endpoint = \"http://127.0.0.1:8080\"", "", func(t *testing.T, in *Instance) {
			if in.CloudSQL.APIVersion != "v1" || in.CloudSQL.APIEndpoint != "http://127.0.0.1:8080/" {
				t.Errorf("cloudsql = %+v", in.CloudSQL)
			}
		}},
		{"localhost and ipv6 loopback", `api_endpoint = "http://[::1]:9/base"`, "", func(t *testing.T, in *Instance) {
			if in.CloudSQL.APIEndpoint != "http://[::1]:9/base/" {
				t.Errorf("endpoint = %q", in.CloudSQL.APIEndpoint)
			}
		}},
		{"sink owner, group, mode, libpq", "", "layout = \"libpq\"\nowner = \"app\"\ngroup = \"0\"\nmode = \"0640\"", func(t *testing.T, in *Instance) {
			s := in.Sinks[0]
			if s.Layout != LayoutLibpq || s.UID != 1000 || s.GID != 0 || s.KeyMode != 0o640 {
				t.Errorf("sink = %+v", s)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("instance \"cloudsql\" \"x\" {\nproject = \"p\"\ninstance = \"i\"\n%s\nsink \"file\" {\ndir = \"/d\"\n%s\n}\n}\n", tt.attrs, tt.sink)
			cfg, err := Parse("agent.hcl", []byte(src), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg.Instances[0])
		})
	}
}

func TestNamedCredentials(t *testing.T) {
	src := `
credentials "google" "default" { credentials_file = "sa.json" }
credentials "google" "other" {
  token_file    = "/run/token"
  quota_project = "billing"
  impersonate_service_account = "certs@p.iam.gserviceaccount.com"
}
instance "cloudsql" "a" {
  project = "p"
  instance = "a"
  sink "file" { dir = "/a" }
}
instance "cloudsql" "b" {
  project = "p"
  instance = "b"
  credentials = "other"
  sink "file" { dir = "/b" }
}`
	cfg, err := Parse("/etc/x/agent.hcl", []byte(src), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Instance("a").CloudSQL.Credentials, cfg.Instance("b").CloudSQL.Credentials
	if a.Name != "default" || a.CredentialsFile != "/etc/x/sa.json" {
		t.Errorf("a uses %+v, want the default block with an absolute path", a)
	}
	if b.Name != "other" || b.TokenFile != "/run/token" || b.QuotaProject != "billing" || b.ImpersonateServiceAccount == "" {
		t.Errorf("b uses %+v", b)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGHUP": syscall.SIGHUP, "HUP": syscall.SIGHUP, "usr1": syscall.SIGUSR1, " SIGTERM ": syscall.SIGTERM} {
		got, err := ParseSignal(in)
		if err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseSignal("SIGNOPE"); err == nil {
		t.Error("ParseSignal(SIGNOPE) succeeded")
	}
}

func TestResolvePath(t *testing.T) {
	t.Setenv(EnvPath, "")
	if got := ResolvePath(""); got != DefaultPath {
		t.Errorf("default = %q", got)
	}
	t.Setenv(EnvPath, "/from/env.hcl")
	if got := ResolvePath(""); got != "/from/env.hcl" {
		t.Errorf("env = %q", got)
	}
	if got := ResolvePath("/flag.hcl"); got != "/flag.hcl" {
		t.Errorf("flag = %q", got)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	if _, err := Load("../agent.hcl.example", Options{}); err != nil {
		t.Fatalf("agent.hcl.example does not validate: %v", err)
	}
}

func TestLevenshteinSuggest(t *testing.T) {
	if got := suggest("cloudsq", []string{"cloudsql", "alloydb"}); got != ` Did you mean "cloudsql"?` {
		t.Errorf("suggest = %q", got)
	}
	if got := suggest("zzzzzz", []string{"cloudsql"}); got != "" {
		t.Errorf("suggest far = %q", got)
	}
}

func TestAlloyDB(t *testing.T) {
	src := `
instance "alloydb" "analytics" {
  project       = "my-proj"
  location      = "us-central1"
  cluster       = "analytics"
  cert_duration = "2h"
  api_version   = "v1"
  sink "file" { dir = "/a" }
}
instance "alloydb" "defaults" {
  project  = "p"
  location = "l"
  cluster  = "c"
  sink "file" { dir = "/b" }
}`
	cfg, err := Parse("agent.hcl", []byte(src), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Instance("analytics").AlloyDB
	if a.Project != "my-proj" || a.Location != "us-central1" || a.Cluster != "analytics" || a.CertDuration != 2*time.Hour || a.APIVersion != "v1" {
		t.Errorf("alloydb = %+v", a)
	}
	d := cfg.Instance("defaults").AlloyDB
	if d.APIEndpoint != DefaultAlloyDBEndpoint || d.APIVersion != "v1beta" || d.CertDuration != 0 || *d.Credentials != (GoogleCredentials{}) {
		t.Errorf("defaults = %+v", d)
	}
}

func TestGeminiDBAndHuaweiCredentials(t *testing.T) {
	opts := testOptions()
	opts.LookupEnv = func(k string) (string, bool) {
		if k == "HW_PASSWORD" {
			return "s3cret-from-env", true
		}
		return "", false
	}
	src := `
credentials "huaweicloud" "default" {
  region        = "cn-north-4"
  user_name     = "ops"
  password      = env("HW_PASSWORD")
  domain_name   = "acct"
  project_id    = "0123456789abcdef0123456789abcdef"
}
instance "geminidb" "cache" {
  project_id  = "0123456789abcdef0123456789abcdef"
  instance_id = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
  sink "file" { dir = "/etc/ssl/geminidb-cache" }
}`
	cfg, err := Parse("agent.hcl", []byte(src), opts)
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Instance("cache")
	g := in.GeminiDB
	if g.APIEndpoint != "https://gaussdb-nosql.cn-north-4.myhuaweicloud.com" || g.Credentials.Name != "default" {
		t.Errorf("geminidb = %+v", g)
	}
	if g.Credentials.Password.Reveal() != "s3cret-from-env" {
		t.Error("password from env() not taken")
	}
	if s := fmt.Sprintf("%v %+v %#v %s", g.Credentials, *g.Credentials, g.Credentials.Password, g.Credentials.Password); strings.Contains(s, "s3cret") {
		t.Errorf("the secret prints: %s", s)
	}
	if in.Schedule == nil || in.Schedule.Spec != DefaultGeminiDBSchedule {
		t.Errorf("schedule = %+v, want the default %s", in.Schedule, DefaultGeminiDBSchedule)
	}
}

func TestManualIAMSinkAttributes(t *testing.T) {
	src := `
instance "cloudsql" "orders" {
  project  = "p"
  instance = "i"
  ip_type  = "private"
  sink "file" {
    dir    = "/a"
    token  = true
    pgpass = true
    user   = "app@p.iam"
  }
}`
	cfg, err := Parse("agent.hcl", []byte(src), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Instance("orders")
	if s := in.Sinks[0]; !s.Token || s.PGPassUser != "app@p.iam" || in.CloudSQL.IPType != "private" {
		t.Errorf("sink %+v, ip_type %q", s, in.CloudSQL.IPType)
	}
}

func TestAgentRateAndShareKeys(t *testing.T) {
	for in, want := range map[string]Rate{"180/m": {180, time.Minute}, "3/s": {3, time.Second}, "5000/h": {5000, time.Hour}} {
		cfg, err := Parse("agent.hcl", []byte(fmt.Sprintf("agent {\n api_rate = %q\n share_keys = true\n}\n", in)), testOptions())
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if cfg.Agent.APIRate != want || !cfg.Agent.ShareKeys {
			t.Errorf("%s: agent = %+v", in, cfg.Agent)
		}
	}
	for _, in := range []string{"0/m", "-1/s", "1/d", "1.5/s", "180", "/m", " 1/s", "1/ s", "99999999999/s"} {
		if r, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %+v, want error", in, r)
		}
	}
	cfg, err := Parse("agent.hcl", []byte("agent {}\n"), testOptions())
	if err != nil || !cfg.Agent.APIRate.IsZero() || cfg.Agent.ShareKeys {
		t.Errorf("defaults: %+v, %v", cfg.Agent, err)
	}
}

func TestConnection(t *testing.T) {
	const sink = `sink "file" { dir = "/d" }`
	tests := []struct {
		name      string
		src       string
		want      Connection
		sqlIPType string // CloudSQL.IPType after loading; "" for AlloyDB
	}{
		{"cloudsql defaults", `instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  connection { user = "app" }
  ` + sink + `
}`, Connection{User: "app", IPType: "public"}, "public"},
		{"cloudsql inherits the instance's ip_type", `instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  ip_type = "private"
  connection {
    user   = "app"
    dbname = "db"
    host   = "db.internal"
    port   = 6432
  }
  ` + sink + `
}`, Connection{User: "app", DBName: "db", Host: "db.internal", Port: 6432, IPType: "private"}, "private"},
		{"cloudsql psc from the connection", `instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  connection {
    user    = "app"
    ip_type = "psc"
  }
  ` + sink + `
}`, Connection{User: "app", IPType: "psc"}, "psc"},
		{"same ip_type twice", `instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  ip_type = "private"
  connection { ip_type = "private" }
  ` + sink + `
}`, Connection{IPType: "private"}, "private"},
		{"alloydb", `instance "alloydb" "x" {
  project = "p"
  location = "l"
  cluster = "c"
  connection {
    user     = "app"
    instance = "primary"
    ip_type  = "private"
  }
  ` + sink + `
}`, Connection{User: "app", Instance: "primary", IPType: "private"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("agent.hcl", []byte(tt.src), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			in := cfg.Instances[0]
			if in.Connection == nil || *in.Connection != tt.want {
				t.Fatalf("connection = %+v, want %+v", in.Connection, tt.want)
			}
			if in.CloudSQL != nil && in.CloudSQL.IPType != tt.sqlIPType {
				t.Errorf("CloudSQL.IPType = %q, want %q", in.CloudSQL.IPType, tt.sqlIPType)
			}
		})
	}
	cfg, err := Parse("agent.hcl", []byte(`instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  `+sink+`
}`), testOptions())
	if err != nil || cfg.Instances[0].Connection != nil {
		t.Errorf("no block: connection = %+v, %v", cfg.Instances[0].Connection, err)
	}
}

func TestPKCS12(t *testing.T) {
	src := `instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  sink "file" {
    dir = "/a"
    pkcs12 { password_file = "keystore.pass" }
  }
  sink "file" {
    dir = "/b"
    pkcs12 { password = env("KEYSTORE_PASS") }
  }
  sink "file" { dir = "/c" }
}`
	cfg, err := Parse("/etc/x/agent.hcl", []byte(src), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Instances[0].Sinks
	if s[0].PKCS12 == nil || s[0].PKCS12.PasswordFile != "/etc/x/keystore.pass" || s[0].PKCS12.Password != "" {
		t.Errorf("sink a: %+v", s[0].PKCS12)
	}
	if s[1].PKCS12 == nil || s[1].PKCS12.Password.Reveal() != "from-env" || s[1].PKCS12.PasswordFile != "" {
		t.Errorf("sink b: %+v", s[1].PKCS12)
	}
	if strings.Contains(fmt.Sprintf("%v %+v %#v", s[1], s[1].PKCS12, *s[1].PKCS12), "from-env") {
		t.Error("the keystore password prints")
	}
	if s[2].PKCS12 != nil {
		t.Errorf("sink c: %+v", s[2].PKCS12)
	}
}

func TestHookEnv(t *testing.T) {
	src := `instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  sink "file" { dir = "/a" }
  hook "exec" {
    command = ["/bin/true"]
    env = {
      APP_MODE = "reload"
      _Count   = 3
      "FROM_ENV" = env("DBCERT_TEST_PROJECT")
      EMPTY    = ""
    }
  }
  hook "exec" { command = ["/bin/true"] }
}`
	cfg, err := Parse("agent.hcl", []byte(src), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Instances[0].Hooks[0].Exec.Env
	want := map[string]string{"APP_MODE": "reload", "_Count": "3", "FROM_ENV": "env-proj", "EMPTY": ""}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("env = %v, want %v", got, want)
	}
	if e := cfg.Instances[0].Hooks[1].Exec.Env; e != nil {
		t.Errorf("no env: %v", e)
	}
}

func TestAgentChanged(t *testing.T) {
	base := Agent{LogLevel: slog.LevelInfo, LogFormat: "text", Listen: "127.0.0.1:9464", APIRate: Rate{N: 180, Per: time.Minute}}
	tests := []struct {
		name   string
		change func(a *Agent)
		want   []string
	}{
		{"nothing", func(*Agent) {}, nil},
		{"log level", func(a *Agent) { a.LogLevel = slog.LevelDebug }, []string{"log_level"}},
		{"listen and format", func(a *Agent) { a.Listen = ""; a.LogFormat = "json" }, []string{"log_format", "listen"}},
		{"api_rate", func(a *Agent) { a.APIRate = Rate{N: 180, Per: time.Second} }, []string{"api_rate"}},
		{"share_keys", func(a *Agent) { a.ShareKeys = true }, []string{"share_keys"}},
	}
	for _, tt := range tests {
		b := base
		tt.change(&b)
		if got := base.Changed(b); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Changed = %v, want %v", tt.name, got, tt.want)
		}
	}
}
