package sinks

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// pgBundle is a client bundle of a PostgreSQL instance with everything a sink may write.
func pgBundle(t testing.TB, ca *testCA) *bundle.Bundle {
	b := ca.ecBundle(t)
	b.LoginToken, b.Host, b.Engine, b.DNSName = "tok", "10.0.0.5", "POSTGRES_15", "abc.sql.goog."
	return b
}

// fullOpts configures every optional file.
func fullOpts(dir string) FileOptions {
	o := opts(dir)
	o.Token, o.PGPassUser = true, "app"
	o.PKCS12 = &PKCS12Options{Password: "pw"}
	o.Connection = &Connection{Service: "orders", User: "app", DBName: "app"}
	return o
}

// TestNamesOneList: Names lists exactly what Write writes and Current expects, for each
// kind of bundle, and nothing else in the directory is a visible file.
func TestNamesOneList(t *testing.T) {
	ca := newCA(t, "names")
	mysql := pgBundle(t, ca)
	mysql.Engine = "MYSQL_8_0"
	sqlserver := pgBundle(t, ca)
	sqlserver.Engine = "SQLSERVER_2019_STANDARD"
	tests := []struct {
		name string
		b    *bundle.Bundle
		want []string
	}{
		{"postgres", pgBundle(t, ca), []string{"key.pem", "key.pk8", "keystore.p12", "token", ".pgpass", "cert.pem", "ca.pem", "truststore.p12", "pg_service.conf", "connection.env"}},
		{"mysql", mysql, []string{"key.pem", "key.pk8", "keystore.p12", "token", ".pgpass", "cert.pem", "ca.pem", "truststore.p12", "my.cnf", "connection.env"}},
		{"sqlserver", sqlserver, []string{"key.pem", "key.pk8", "keystore.p12", "token", ".pgpass", "cert.pem", "ca.pem", "truststore.p12"}},
		{"ca-only", ca.caOnly(), []string{"ca.pem", "truststore.p12"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sinkDir(t)
			f := newSink(t, fullOpts(dir))
			if got := f.Names(tt.b); !slices.Equal(got, tt.want) {
				t.Fatalf("Names = %q, want %q", got, tt.want)
			}
			mustWrite(t, f, tt.b, true)
			mustCurrent(t, f, tt.b)
			var visible []string
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if !strings.HasPrefix(e.Name(), "..") {
					visible = append(visible, e.Name())
				}
			}
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(visible, want) {
				t.Errorf("visible names %q, want %q", visible, want)
			}
			gen := filepath.Join(dir, dataTarget(t, dir))
			for _, n := range tt.want {
				if _, err := os.Stat(filepath.Join(gen, n)); err != nil {
					t.Errorf("the generation lacks %s: %v", n, err)
				}
			}
			// Every name Current expects: removing any one makes it report invalid files.
			for _, n := range tt.want {
				target := filepath.Join(gen, n)
				data, _ := os.ReadFile(target)
				must(t, os.Remove(target))
				if _, err := f.Current(); !errors.Is(err, bundle.ErrInvalid) {
					t.Errorf("Current with %s missing from the generation: %v, want ErrInvalid", n, err)
				}
				must(t, os.WriteFile(target, data, 0o600))
			}
		})
	}
}

// TestForeignNameRefusedBeforeWriting: a file the agent did not create at any name the
// sink writes makes Write refuse before anything is written: no new generation, ..data
// unchanged, the foreign file untouched; Current names it too. After it is moved away,
// Write succeeds.
func TestForeignNameRefusedBeforeWriting(t *testing.T) {
	ca := newCA(t, "foreign")
	for _, name := range []string{"key.pk8", "keystore.p12", "token", ".pgpass", "truststore.p12", "pg_service.conf", "connection.env"} {
		t.Run(name, func(t *testing.T) {
			dir := sinkDir(t)
			f := newSink(t, fullOpts(dir))
			first := pgBundle(t, ca)
			mustWrite(t, f, first, true)
			foreign := filepath.Join(dir, name)
			must(t, os.Remove(foreign)) // the agent's link
			must(t, os.WriteFile(foreign, []byte("mine\n"), 0o600))
			before := snapshot(t, dir)

			_, err := f.Write(t.Context(), pgBundle(t, ca))
			if err == nil || !strings.Contains(err.Error(), foreign) {
				t.Fatalf("Write over a foreign %s: %v, want a refusal naming it", name, err)
			}
			if !errors.Is(err, ErrForeign) {
				t.Errorf("the refusal does not wrap ErrForeign: %v", err)
			}
			if d := snapshotDiff(before, snapshot(t, dir)); d != "" {
				t.Fatalf("a refused write changed the directory:\n%s", d)
			}
			if _, err := f.Current(); err == nil || !errors.Is(err, ErrForeign) {
				t.Errorf("Current with a foreign %s: %v, want ErrForeign", name, err)
			}
			must(t, os.Remove(foreign))
			second := pgBundle(t, ca)
			mustWrite(t, f, second, true)
			mustCurrent(t, f, second)
		})
	}
}

// TestMetadata: Issued, TokenExpiry, Host, Engine and DNSName are stored in the
// generation and read back; an equal bundle with a later Issued rewrites only the
// metadata (changed=false); an earlier one does not move it back.
func TestMetadata(t *testing.T) {
	ca := newCA(t, "meta")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	b := pgBundle(t, ca)
	b.Issued, b.TokenExpiry = t0, t0.Add(time.Hour)
	mustWrite(t, f, b, true)
	got, err := f.Current()
	must(t, err)
	if !got.Issued.Equal(t0) || !got.TokenExpiry.Equal(b.TokenExpiry) || got.Host != b.Host || got.Engine != b.Engine || got.DNSName != b.DNSName {
		t.Fatalf("read back Issued %v TokenExpiry %v Host %q Engine %q DNSName %q", got.Issued, got.TokenExpiry, got.Host, got.Engine, got.DNSName)
	}

	// CA-only: every download advances Issued, even with the same CA.
	cab := ca.caOnly()
	cab.Issued = t0
	mustWrite(t, f, cab, true)
	before := snapshot(t, dir)
	gen := dataTarget(t, dir)
	later := ca.caOnly()
	later.Issued = t0.Add(6 * time.Hour)
	mustWrite(t, f, later, false)
	if gen2 := dataTarget(t, dir); gen2 != gen {
		t.Fatalf("an unchanged CA made a new generation %s", gen2)
	}
	metaPath := filepath.Join(dir, gen, metaName)
	if d := snapshotDiff(before, snapshot(t, dir)); d != "changed "+metaPath {
		t.Fatalf("an unchanged CA with a later Issued changed:\n%s\nwant only the metadata", d)
	}
	if got, err := f.Current(); err != nil || !got.Issued.Equal(later.Issued) {
		t.Fatalf("Issued after the later download = %v (%v), want %v", got.Issued, err, later.Issued)
	}
	earlier := ca.caOnly()
	earlier.Issued = t0.Add(time.Hour)
	mustWrite(t, f, earlier, false)
	if got, _ := f.Current(); !got.Issued.Equal(later.Issued) {
		t.Fatalf("an earlier Issued moved the stored one back to %v", got.Issued)
	}
	if _, err := os.Stat(filepath.Join(dir, gen, metaTmpName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the metadata's temporary file was left behind: %v", err)
	}

	// A changed DNS name is a change of the files.
	c := pgBundle(t, ca)
	mustWrite(t, f, c, true)
	c2 := *c
	c2.DNSName = "other.sql.goog."
	mustWrite(t, f, &c2, true)
	if got, _ := f.Current(); got.DNSName != c2.DNSName {
		t.Fatalf("DNSName read back %q", got.DNSName)
	}
}

// TestCurrentWithoutMetadata: generations written before metadata existed still read
// back (Issued from the generation's name), and the next Write with the same material
// adds the metadata without a new generation.
func TestCurrentWithoutMetadata(t *testing.T) {
	ca := newCA(t, "nometa")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	b := ca.ecBundle(t)
	mustWrite(t, f, b, true)
	gen := dataTarget(t, dir)
	must(t, os.Remove(filepath.Join(dir, gen, metaName)))
	got, err := f.Current()
	must(t, err)
	if !got.Issued.Equal(generationTime(gen)) {
		t.Fatalf("Issued without metadata = %v, want the generation's time %v", got.Issued, generationTime(gen))
	}
	mustWrite(t, f, b, false)
	if _, err := os.Stat(filepath.Join(dir, gen, metaName)); err != nil {
		t.Fatalf("the unchanged write did not add the metadata: %v", err)
	}
}

// TestPreflight: a foreign file at a name the sink writes is found before any write
// (and before any API call the caller would make); a missing directory is fine.
func TestPreflight(t *testing.T) {
	dir := sinkDir(t)
	f := newSink(t, fullOpts(dir))
	must(t, f.Preflight(true))
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "key.pk8"), []byte("x"), 0o600))
	if err := f.Preflight(true); !errors.Is(err, ErrForeign) {
		t.Fatalf("Preflight with a foreign key.pk8: %v, want ErrForeign", err)
	}
	if err := f.Preflight(false); err != nil {
		t.Fatalf("Preflight of a CA-only instance minds key.pk8: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, dataLink)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Preflight wrote something: %v", err)
	}
}
