package verify

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/config"
	"github.com/dbcert-agent/dbcert-agent/sinks"
)

// fakeSink is a sink whose Current returns b (or err).
type fakeSink struct {
	b   *bundle.Bundle
	err error
}

func (f fakeSink) Paths() sinks.Paths {
	return sinks.Paths{Cert: "/d/cert.pem", Key: "/d/key.pem", CA: "/d/ca.pem"}
}
func (f fakeSink) Current() (*bundle.Bundle, error) { return f.b, f.err }
func (f fakeSink) Dir() string                      { return "/d" }

func TestTargets(t *testing.T) {
	inst := func(name, typ string, conn *config.Connection) *config.Instance {
		in := &config.Instance{Name: name, Type: typ, Connection: conn, Sinks: []config.FileSink{{Dir: "/d", Layout: "pem"}}}
		if typ == config.TypeCloudSQL {
			in.CloudSQL = &config.CloudSQL{Project: "p", Instance: name + "-i"}
		}
		return in
	}
	tests := []struct {
		name     string
		in       *config.Instance
		b        *bundle.Bundle
		sinkErr  error
		want     Target
		errMatch string
	}{
		{name: "cloudsql postgres, stored host", in: inst("orders", config.TypeCloudSQL, &config.Connection{User: "app", DBName: "db"}),
			b:    &bundle.Bundle{Host: "10.0.0.5", Engine: "POSTGRES_15", DNSName: "x.sql.goog."},
			want: Target{Engine: EnginePostgres, Addr: "10.0.0.5:5432", User: "app", Database: "db", Identity: Identity{DNSName: "x.sql.goog.", CN: "p:orders-i"}}},
		{name: "cloudsql mysql, host and port from the block", in: inst("shop", config.TypeCloudSQL, &config.Connection{User: "app", Host: "db.internal", Port: 3307}),
			b:    &bundle.Bundle{Host: "10.0.0.6", Engine: "MYSQL_8_0"},
			want: Target{Engine: EngineMySQL, Addr: "db.internal:3307", User: "app", Identity: Identity{CN: "p:shop-i"}}},
		{name: "mysql default port", in: inst("shop", config.TypeCloudSQL, &config.Connection{User: "app"}),
			b:    &bundle.Bundle{Host: "10.0.0.6", Engine: "MYSQL_5_7"},
			want: Target{Engine: EngineMySQL, Addr: "10.0.0.6:3306", User: "app", Identity: Identity{CN: "p:shop-i"}}},
		{name: "alloydb: chain only", in: inst("an", config.TypeAlloyDB, &config.Connection{User: "app", Instance: "primary"}),
			b:    &bundle.Bundle{Host: "10.0.0.7", Engine: "POSTGRES"},
			want: Target{Engine: EnginePostgres, Addr: "10.0.0.7:5432", User: "app"}},
		{name: "no address", in: inst("orders", config.TypeCloudSQL, &config.Connection{User: "app"}), b: &bundle.Bundle{},
			errMatch: "no address is known"},
		{name: "sql server", in: inst("ms", config.TypeCloudSQL, &config.Connection{User: "app"}), b: &bundle.Bundle{Host: "h", Engine: "SQLSERVER_2019_STANDARD"},
			errMatch: "SQL Server"},
		{name: "no files yet", in: inst("orders", config.TypeCloudSQL, &config.Connection{User: "app"}), sinkErr: fs.ErrNotExist,
			errMatch: "run dbcert-agent once first"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Instances: []*config.Instance{tc.in}}
			open := func(*config.Instance, config.FileSink) (Sink, error) { return fakeSink{tc.b, tc.sinkErr}, nil }
			plans, err := Targets(cfg, nil, open)
			if err != nil || len(plans) != 1 {
				t.Fatalf("Targets: %v, %d plans", err, len(plans))
			}
			p := plans[0]
			if tc.errMatch != "" {
				if p.Err == nil || !strings.Contains(p.Err.Error(), tc.errMatch) || !strings.Contains(p.Err.Error(), tc.in.Name) {
					t.Fatalf("err = %v, want one naming %q and %q", p.Err, tc.in.Name, tc.errMatch)
				}
				return
			}
			if p.Err != nil {
				t.Fatal(p.Err)
			}
			got := p.Target
			if got.Engine != tc.want.Engine || got.Addr != tc.want.Addr || got.User != tc.want.User || got.Database != tc.want.Database ||
				got.Identity != tc.want.Identity || got.CAFile != "/d/ca.pem" || got.Instance != tc.in.Name {
				t.Errorf("target = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTargetsUsage(t *testing.T) {
	withConn := &config.Instance{Name: "a", Type: config.TypeCloudSQL, Connection: &config.Connection{User: "u"}, Sinks: []config.FileSink{{Dir: "/d"}}}
	without := &config.Instance{Name: "b", Type: config.TypeCloudSQL, Sinks: []config.FileSink{{Dir: "/d"}}}
	open := func(*config.Instance, config.FileSink) (Sink, error) { return fakeSink{err: fs.ErrNotExist}, nil }
	for _, tc := range []struct {
		name  string
		insts []*config.Instance
		names []string
		want  string
	}{
		{"unknown instance", []*config.Instance{withConn}, []string{"zzz"}, `instance "zzz" is not in the configuration`},
		{"named without connection", []*config.Instance{withConn, without}, []string{"b"}, `instance "b" has no connection block`},
		{"nothing to check", []*config.Instance{without}, nil, "no instance has a connection block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Targets(&config.Config{Instances: tc.insts}, tc.names, open)
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a UsageError containing %q", err, tc.want)
			}
		})
	}
}
