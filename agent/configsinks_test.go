package agent

import (
	"testing"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/dbcert-agent/dbcert-agent/config"
)

// FuzzConfigAcceptsOnlyWhatSinksTake: a configuration that config.Parse accepts (what
// `validate` runs) never holds a file sink that OpenFileSink refuses (what `once` and
// `run` build), whatever the connection values and the sink directory: a value that
// passes validate must not stop the agent at start. Values reach the HCL source through
// hclwrite's quoting, so every byte of them reaches both checks.
func FuzzConfigAcceptsOnlyWhatSinksTake(f *testing.F) {
	for _, s := range []struct {
		user, dbname, host, dir string
		port                    int
	}{
		{"app", "app", "", "/var/lib/dbcert-agent/orders", 0},
		{"o'brien", "app", "", "/var/lib/dbcert-agent/orders", 0},
		{"app", `say "hi"`, "", "/var/lib/dbcert-agent/orders", 0},
		{"app ", " app", "", "/var/lib/dbcert-agent/orders", 0},
		{"a\tb", "a\\b", "db.internal", "/var/lib/dbcert-agent/orders", 5432},
		{"app", "app", "10.0.0.5", "/", 0},
		{"app", "app", "", "/srv/o'brien", 0},
		{"app", "app", "", `/srv/"x"`, 0},
		{"app", "app", "", "relative/dir", 70000},
		{"#x", "a=b", "[::1]", "/srv/a b", 1},
		{"${x}", "%{y}", "h", "/srv/\u00e9", 3306},
	} {
		f.Add(s.user, s.dbname, s.host, s.dir, s.port)
	}
	f.Fuzz(func(t *testing.T, user, dbname, host, dir string, port int) {
		q := func(s string) string { return string(hclwrite.TokensForValue(cty.StringVal(s)).Bytes()) }
		src := `instance "cloudsql" "orders" {
  project  = "my-proj"
  instance = "orders-pg"
  connection {
    user   = ` + q(user) + `
    dbname = ` + q(dbname) + `
    host   = ` + q(host) + `
    port   = ` + string(hclwrite.TokensForValue(cty.NumberIntVal(int64(port))).Bytes()) + `
  }
  sink "file" { dir = ` + q(dir) + ` }
}
`
		cfg, err := config.Parse("/etc/dbcert-agent/agent.hcl", []byte(src), config.Options{})
		if err != nil {
			return // refused up front, with a diagnostic: fine
		}
		for _, ci := range cfg.Instances {
			for _, cs := range ci.Sinks {
				if _, err := OpenFileSink(ci, cs); err != nil {
					t.Fatalf("validate accepts it, but the sink is refused at start: %v\nconfig:\n%s", err, src)
				}
			}
		}
	})
}
