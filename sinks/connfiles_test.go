package sinks

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func baseParams() connParams {
	return connParams{Service: "orders", Host: "10.0.0.5", Port: 5432, User: "app", DBName: "app",
		Cert: "/var/lib/dbcert/orders/cert.pem", Key: "/var/lib/dbcert/orders/key.pem",
		KeyDER: "/var/lib/dbcert/orders/key.pk8", CA: "/var/lib/dbcert/orders/ca.pem"}
}

// oddParams holds values every format has to escape.
func oddParams() connParams {
	return connParams{Service: "orders-eu", Host: "2001:db8::1", Port: 6432, User: "svc@proj.iam", DBName: "my db#1&x=y+z",
		Cert: "/srv/a b/$HOME/`x`/c\\d/cert.pem", Key: "/srv/a b/$HOME/`x`/c\\d/key.pem",
		KeyDER: "/srv/a b/$HOME/`x`/c\\d/key.pk8", CA: "/srv/a b/$HOME/`x`/c\\d/ca.pem"}
}

// TestConnectionFilesGolden compares each format with testdata/<name>.golden
// (go test -run TestConnectionFilesGolden -update rewrites them).
func TestConnectionFilesGolden(t *testing.T) {
	mysqlBase := baseParams()
	mysqlBase.Port = 3306
	noDB := baseParams()
	noDB.DBName, noDB.User = "", ""
	tests := []struct {
		golden string
		format func(connParams) ([]byte, error)
		p      connParams
	}{
		{"pg_service.conf", formatPGService, baseParams()},
		{"pg_service_nodb.conf", formatPGService, noDB},
		{"pg_service_odd.conf", formatPGService, connParams{Service: "orders-eu", Host: "db.internal", Port: 6432, User: "svc@proj.iam", DBName: "my db#1",
			Cert: "/srv/a b/cert.pem", Key: "/srv/a b/key.pem", KeyDER: "/srv/a b/key.pk8", CA: "/srv/a b/ca.pem"}},
		{"pg_connection.env", formatPGEnv, baseParams()},
		{"pg_connection_odd.env", formatPGEnv, oddParams()},
		{"pg_connection_nodb.env", formatPGEnv, noDB},
		{"my.cnf", formatMyCnf, mysqlBase},
		{"my_odd.cnf", formatMyCnf, oddParams()},
		{"mysql_connection.env", formatMySQLEnv, mysqlBase},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := tt.format(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.golden+".golden")
			if *update {
				must(t, os.MkdirAll("testdata", 0o755))
				must(t, os.WriteFile(path, got, 0o644))
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("%s:\n%s\nwant:\n%s", tt.golden, got, want)
			}
		})
	}
}

// TestConnectionValuesRefused: values a format cannot carry are refused with a message
// naming the value, never written.
func TestConnectionValuesRefused(t *testing.T) {
	tests := []struct {
		name   string
		format func(connParams) ([]byte, error)
		edit   func(*connParams)
	}{
		{"pg_service newline", formatPGService, func(p *connParams) { p.User = "a\nhost=evil" }},
		{"pg_service NUL", formatPGService, func(p *connParams) { p.DBName = "a\x00" }},
		{"pg_service trailing space", formatPGService, func(p *connParams) { p.DBName = "app " }},
		{"pg_service bracket in service", formatPGService, func(p *connParams) { p.Service = "a]b" }},
		{"env newline", formatPGEnv, func(p *connParams) { p.Host = "h\nPGSSLMODE=disable" }},
		{"env single quote", formatPGEnv, func(p *connParams) { p.User = "o'brien" }},
		{"my.cnf newline", formatMyCnf, func(p *connParams) { p.User = "a\n[mysqld]" }},
		{"my.cnf double quote", formatMyCnf, func(p *connParams) { p.DBName = `a"b#c` }},
		{"my.cnf double quote in a path", formatMyCnf, func(p *connParams) { p.Key = `/srv/"x"/key.pem` }},
		{"mysql env CR", formatMySQLEnv, func(p *connParams) { p.Host = "h\r" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := baseParams()
			tt.edit(&p)
			if got, err := tt.format(p); err == nil || !errors.Is(err, errUnsafe) {
				t.Fatalf("accepted: %q, %v", got, err)
			}
		})
	}
}

// TestEnvFileShellReadsLiterally: `set -a; . connection.env` in a real shell gives every
// variable exactly its value (no expansion of $, `, \, spaces, quotes).
func TestEnvFileShellReadsLiterally(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	p := oddParams()
	data, err := formatPGEnv(p)
	must(t, err)
	file := filepath.Join(t.TempDir(), "connection.env")
	must(t, os.WriteFile(file, data, 0o644))
	want := map[string]string{
		"PGHOST": p.Host, "PGPORT": "6432", "PGDATABASE": p.DBName, "PGUSER": p.User, "PGSSLMODE": "verify-ca",
		"PGSSLCERT": p.Cert, "PGSSLKEY": p.Key, "PGSSLROOTCERT": p.CA, "DATABASE_URL": postgresURI(p), "JDBC_URL": jdbcURL(p),
	}
	for name, v := range want {
		cmd := exec.Command(sh, "-c", `set -a; . "$1"; printf %s "$(eval printf %s \"\$$2\")"`, "sh", file, name)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if string(out) != v {
			t.Errorf("%s = %q in sh, want %q", name, out, v)
		}
	}
}

// TestURIsDecodeBack: the URIs percent-encode every special character (spaces as %20,
// never '+') and bracket IPv6 hosts.
func TestURIsDecodeBack(t *testing.T) {
	p := oddParams()
	uri := postgresURI(p)
	if !strings.HasPrefix(uri, "postgresql://svc%40proj.iam@[2001:db8::1]:6432/my%20db%231%26x%3Dy%2Bz?sslmode=verify-ca&sslcert=/srv/a%20b/%24HOME/%60x%60/c%5Cd/cert.pem&") {
		t.Errorf("DATABASE_URL = %s", uri)
	}
	j := jdbcURL(p)
	if !strings.HasPrefix(j, "jdbc:postgresql://[2001:db8::1]:6432/my%20db%231%26x%3Dy%2Bz?user=svc%40proj.iam&") || !strings.Contains(j, "sslkey=/srv/a%20b/%24HOME/%60x%60/c%5Cd/key.pk8") {
		t.Errorf("JDBC_URL = %s", j)
	}
	if strings.Contains(uri, "+") || strings.Contains(j, "+") {
		t.Errorf("a '+' in a URI would decode as a space in pgjdbc")
	}
}

// TestMyCnfClientReadsLiterally: the MariaDB/MySQL option parser (my_print_defaults)
// reads every [client] value of my.cnf back exactly.
func TestMyCnfClientReadsLiterally(t *testing.T) {
	tool, err := exec.LookPath("my_print_defaults")
	if err != nil {
		if os.Getenv("DBCERT_E2E") == "require" {
			t.Fatal("my_print_defaults is not installed (DBCERT_E2E=require)")
		}
		t.Skip("my_print_defaults is not installed")
	}
	p := oddParams()
	data, err := formatMyCnf(p)
	must(t, err)
	file := filepath.Join(t.TempDir(), "my.cnf")
	must(t, os.WriteFile(file, data, 0o644))
	out, err := exec.Command(tool, "--defaults-extra-file="+file, "client").Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	want := strings.Join([]string{"--host=" + p.Host, "--port=6432", "--user=" + p.User, "--database=" + p.DBName,
		"--ssl-ca=" + p.CA, "--ssl-cert=" + p.Cert, "--ssl-key=" + p.Key}, "\n") + "\n"
	if string(out) != want {
		t.Errorf("my_print_defaults read:\n%s\nwant:\n%s", out, want)
	}
}

// TestConnectionFilesInSink: a sink with a connection writes the files of the bundle's
// engine, pointing at its own visible names, in the same generation; an engine change
// switches them.
func TestConnectionFilesInSink(t *testing.T) {
	ca := newCA(t, "conn")
	dir := sinkDir(t)
	o := opts(dir)
	o.Layout = "libpq"
	o.Connection = &Connection{Service: "orders", User: "app", DBName: "app", Host: "db.internal"}
	f := newSink(t, o)
	b := pgBundle(t, ca)
	mustWrite(t, f, b, true)
	p := f.Paths()
	svc, err := os.ReadFile(p.PGService)
	must(t, err)
	for _, want := range []string{"[orders]\n", "host=db.internal\n", "port=5432\n", "sslcert=" + p.Cert + "\n", "sslkey=" + p.Key + "\n", "sslrootcert=" + p.CA + "\n"} {
		if !strings.Contains(string(svc), want) {
			t.Errorf("pg_service.conf lacks %q:\n%s", want, svc)
		}
	}
	env, err := os.ReadFile(p.ConnEnv)
	must(t, err)
	if !strings.Contains(string(env), "sslkey="+p.KeyDER) {
		t.Errorf("JDBC_URL does not use the DER key %s:\n%s", p.KeyDER, env)
	}
	if fileMode(t, p.PGService) != 0o644 || fileMode(t, p.ConnEnv) != 0o644 {
		t.Errorf("connection files are not 0644")
	}

	my := pgBundle(t, ca)
	my.Engine = "MYSQL_8_0"
	mustWrite(t, f, my, true)
	if c, err := f.Current(); err != nil || !bundle.Equal(c, &bundle.Bundle{Key: my.Key, Chain: my.Chain, CAs: my.CAs, Host: my.Host, Engine: my.Engine, DNSName: my.DNSName}) {
		t.Fatalf("Current after the MySQL write: %v", err)
	}
	mustWrite(t, f, my, false) // the token this sink does not store is no change
	if exists(t, p.PGService) {
		t.Errorf("pg_service.conf stayed after the engine became MySQL")
	}
	cnf, err := os.ReadFile(p.MyCnf)
	must(t, err)
	if !strings.Contains(string(cnf), `port="3306"`) {
		t.Errorf("my.cnf without the MySQL default port:\n%s", cnf)
	}

	// A host the API gives that no format can carry is refused before writing.
	bad := pgBundle(t, ca)
	o.Connection.Host = ""
	f2 := newSink(t, o)
	bad.Host = "10.0.0.5\nsslmode=disable"
	if _, err := f2.Write(t.Context(), bad); err == nil {
		t.Fatal("a host with a line break was written")
	}
	if _, err := NewFile(FileOptions{Dir: dir, UID: -1, GID: -1, Connection: &Connection{Service: "o", User: "it's"}}); err == nil {
		t.Error("NewFile accepted a connection user that connection.env cannot carry")
	}
}
