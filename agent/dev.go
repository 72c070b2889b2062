package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/pgtest"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// DevOptions configure Dev. Zero values are defaults.
type DevOptions struct {
	Dir          string        // default "dbcert-dev"
	CertLifetime time.Duration // emulator client certificate lifetime; default 1m
	Logger       *slog.Logger
	Hangup       <-chan os.Signal // reload on each value (SIGHUP)
	Out          io.Writer        // where the banner goes; default io.Discard
	// Instances is how many Cloud SQL instances the config gets; default 2 ("orders"
	// with a pem sink, "billing" with a libpq sink, each with an exec hook). Beyond 10,
	// instances get no hook (for benchmarks).
	Instances int
	// EmulatorOnly writes the config and serves the emulator without running the agent,
	// so the agent can be run (and measured) as a separate process.
	EmulatorOnly bool
	// Quota, when set, makes the emulator enforce a per-identity admin API quota (429
	// with Retry-After), to watch the agent pace itself; default none.
	Quota emulator.Quota
	// NoPostgres does not start the local PostgreSQL server even when PostgreSQL is
	// installed. By default (small setups, PostgreSQL installed) Dev starts a throwaway
	// server on loopback that trusts the emulator's client CA and presents a server
	// certificate from the "orders" instance's server CA, and points "orders" at it.
	NoPostgres bool
}

// Dev starts the in-process emulator on loopback, writes a service-account key and a
// config pointing at it into o.Dir, and runs the daemon (the same Run as `dbcert-agent
// run`, config reloads included) until ctx is done, so a new user sees files, rotations
// and hooks without a cloud account.
func Dev(ctx context.Context, o DevOptions) error {
	if o.Dir == "" {
		o.Dir = "dbcert-dev"
	}
	if o.CertLifetime <= 0 {
		o.CertLifetime = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	emu, err := emulator.New(emulator.Options{CertLifetime: o.CertLifetime, Quota: o.Quota})
	if err != nil {
		return fmt.Errorf("dev: starting the emulator: %w", err)
	}
	if err := emu.Start("127.0.0.1:0"); err != nil {
		return fmt.Errorf("dev: starting the emulator: %w", err)
	}
	defer emu.Close()
	if o.Instances <= 0 {
		o.Instances = 2
	}
	instances := devInstances(o.Instances)
	for _, in := range instances {
		emu.AddCloudSQLInstance("dev-proj", in.Instance, emulator.CloudSQLInstance{})
	}
	small := o.Instances <= 10 // small setups also show the other providers, and hooks
	if small {
		emu.AddAlloyDBCluster("dev-proj", "us-central1", "analytics")
		emu.AddGeminiDBInstance(devHuaweiProject, devGeminiInstance)
		emu.AddHuaweiUser("dev-account", "dev-user", devHuaweiPassword)
	}
	pgPort, pgNote := 5432, ""
	if small && !o.NoPostgres {
		srv, note, err := startDevPostgres(emu)
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		if srv != nil {
			defer srv.Close()
			pgPort = srv.Port()
		}
		pgNote = note
	}
	cfgPath, err := writeDevFiles(dir, emu, instances, small, pgPort)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if pgNote != "" {
		pgNote = fmt.Sprintf(pgNote, filepath.Join(dir, "out", "orders"), cfgPath)
	}
	if o.EmulatorOnly {
		fmt.Fprintf(o.Out, "dbcert-agent dev: emulator on %s serving %d instance(s); config %s\nRun the agent with: dbcert-agent run -config %s\n",
			emu.URL(), len(instances), cfgPath, cfgPath)
		<-ctx.Done()
		return nil
	}
	cfg, err := config.Load(cfgPath, config.Options{})
	if err != nil {
		return fmt.Errorf("dev: the generated config %s does not load: %w", cfgPath, err)
	}
	a, err := New(ctx, cfg, Options{Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	reload := func(ctx context.Context) ([]*Instance, error) {
		c, err := config.Load(cfgPath, config.Options{})
		if err != nil {
			return nil, err
		}
		return Build(ctx, c, BuildOptions{Logger: o.Logger})
	}
	fmt.Fprintf(o.Out, `dbcert-agent dev: emulator of Cloud SQL, AlloyDB, GeminiDB, Google OAuth and Huawei IAM on %s
  config:   %s   (edit it: the agent reloads on save)
  files:    %s
  hook log: %s
Certificates live %s; the daemon renews each when about a third of its lifetime is
left, so expect a rotation every %s or so. Ctrl-C to stop.
%s`, emu.URL(), cfgPath, filepath.Join(dir, "out"), filepath.Join(dir, "hooks.log"), o.CertLifetime, (o.CertLifetime * 2 / 3).Round(time.Second), pgNote)
	return a.Run(ctx, RunOptions{ConfigPath: cfgPath, Reload: reload, Hangup: o.Hangup,
		APIRate: cfg.Agent.APIRate, ShareKeys: cfg.Agent.ShareKeys})
}

// startDevPostgres starts a throwaway PostgreSQL server on loopback that requires client
// certificates from the emulator's client CA and presents a certificate from the
// "orders" instance's server CA (CN dev-proj:orders-pg). Without PostgreSQL it returns a
// nil server and a note on how to get one. The note is a format with %[1]s the orders
// sink dir and %[2]s the config path.
func startDevPostgres(emu *emulator.Emulator) (*pgtest.Server, string, error) {
	if err := pgtest.Available(); err != nil {
		return nil, fmt.Sprintf(`No local PostgreSQL server: %v.
Install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) and dev starts one that
trusts these certificates, so you can connect with the files in %%[1]s.
`, err), nil
	}
	cert, key, err := emu.ServerCert("dev-proj", "orders-pg", []string{"127.0.0.1", "localhost"})
	if err != nil {
		return nil, "", err
	}
	srv, err := pgtest.Launch(pgtest.Options{ServerCertPEM: cert, ServerKeyPEM: key, ClientCAPEM: emu.ClientCAPEM()})
	if err != nil {
		return nil, "", fmt.Errorf("starting the local PostgreSQL server: %w", err)
	}
	return srv, fmt.Sprintf(`A local PostgreSQL server on 127.0.0.1:%d trusts the emulator's client certificates and
presents a certificate from the orders instance's server CA. Connect with the files:
  PGSERVICEFILE=%%[1]s/pg_service.conf psql service=orders
  dbcert-agent verify -config %%[2]s
`, srv.Port()), nil
}

// The emulated Huawei Cloud account of dev (loopback only; not a real secret).
const (
	devHuaweiProject  = "0123456789abcdef0123456789abcdef"
	devGeminiInstance = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
	devHuaweiPassword = "dev-password"
	// devKeystorePassword protects the orders sink's PKCS#12 stores (keystore.pass).
	devKeystorePassword = "dev-keystore"
)

// devInstance is one instance of the generated config.
type devInstance struct {
	Name, Instance, Layout string
}

func devInstances(n int) []devInstance {
	out := []devInstance{{"orders", "orders-pg", "pem"}, {"billing", "billing-pg", "libpq"}}
	for i := 3; i <= n; i++ {
		out = append(out, devInstance{fmt.Sprintf("db-%04d", i), fmt.Sprintf("db-%04d-pg", i), "pem"})
	}
	return out[:n]
}

var devConfig = template.Must(template.New("agent.hcl").Parse(`
{{- define "certHook"}}["/bin/sh", "-c", "echo \"$(date -u +%FT%TZ) $DBCERT_EVENT $DBCERT_INSTANCE $DBCERT_CERT_FILE until $DBCERT_NOT_AFTER\" >> {{.HookLog}}"]{{end -}}
# Generated by "dbcert-agent dev": points at the emulator on {{.URL}}.
credentials "google" "default" {
  credentials_file = "sa.json"
}
{{range .Instances}}
instance "cloudsql" "{{.Name}}" {
  project      = "dev-proj"
  instance     = "{{.Instance}}"
  api_endpoint = "{{$.URL}}"
{{- if eq .Name "orders"}}
  connection {
    user   = "postgres"
    dbname = "postgres"
    host   = "127.0.0.1"
    port   = {{$.PGPort}}
  }
{{- end}}
  sink "file" {
    dir    = "out/{{.Name}}"
    layout = "{{.Layout}}"
{{- if eq .Name "orders"}}
    pkcs12 {
      password_file = "keystore.pass"
    }
{{- end}}
  }
{{- if $.Hooks}}
  hook "exec" {
    command = {{template "certHook" $}}
  }
{{- end}}
}
{{end}}
{{- if .Hooks}}
credentials "huaweicloud" "default" {
  region        = "cn-north-4"
  iam_endpoint  = "{{.URL}}"
  user_name     = "dev-user"
  password_file = "hw-password"
  domain_name   = "dev-account"
  project_id    = "{{.HuaweiProject}}"
}

instance "geminidb" "cache" {
  project_id   = "{{.HuaweiProject}}"
  instance_id  = "{{.GeminiInstance}}"
  api_endpoint = "{{.URL}}"
  schedule     = "@every 1m"
  sink "file" {
    dir = "out/cache"
  }
  hook "exec" {
    command = ["/bin/sh", "-c", "echo \"$(date -u +%FT%TZ) $DBCERT_EVENT $DBCERT_INSTANCE $DBCERT_CA_FILE\" >> {{.HookLog}}"]
  }
}

instance "alloydb" "analytics" {
  project      = "dev-proj"
  location     = "us-central1"
  cluster      = "analytics"
  api_endpoint = "{{.URL}}"
  sink "file" {
    dir = "out/analytics"
  }
  hook "exec" {
    command = {{template "certHook" $}}
  }
}
{{- end}}
`))

// writeDevFiles writes sa.json and agent.hcl into dir and returns the config path.
func writeDevFiles(dir string, emu *emulator.Emulator, instances []devInstance, hooks bool, pgPort int) (string, error) {
	sa, err := emu.ServiceAccountJSON("dev-agent@dev-proj.iam.gserviceaccount.com")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.json"), sa, 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "hw-password"), []byte(devHuaweiPassword+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "keystore.pass"), []byte(devKeystorePassword+"\n"), 0o600); err != nil {
		return "", err
	}
	var buf strings.Builder
	data := map[string]any{"URL": emu.URL(), "HookLog": filepath.Join(dir, "hooks.log"), "Instances": instances, "Hooks": hooks, "PGPort": pgPort,
		"HuaweiProject": devHuaweiProject, "GeminiInstance": devGeminiInstance}
	if err := devConfig.Execute(&buf, data); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "agent.hcl")
	return p, os.WriteFile(p, []byte(buf.String()), 0o644)
}
