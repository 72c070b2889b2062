// Package config loads the agent's HCL configuration into a runtime Config.
//
// The HCL file is decoded into file-shaped structs (file.go), checked, and converted into
// the types below, with every default filled in here and only here. No HCL type leaks out
// of this package except inside *DiagError, which renders diagnostics with file, line,
// column and source snippet.
package config

import (
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/robfig/cron/v3"
)

// DefaultPath is where the agent looks for its configuration when neither -config nor
// DBCERT_AGENT_CONFIG is given.
const DefaultPath = "/etc/dbcert-agent/agent.hcl"

// EnvPath names the environment variable that overrides DefaultPath.
const EnvPath = "DBCERT_AGENT_CONFIG"

// Defaults, documented in agent.hcl.example and the README.
const (
	DefaultCloudSQLEndpoint = "https://sqladmin.googleapis.com/"
	DefaultCloudSQLVersion  = "v1beta4"
	DefaultAlloyDBEndpoint  = "https://alloydb.googleapis.com/"
	DefaultAlloyDBVersion   = "v1beta"
	DefaultRenewFraction    = 1.0 / 3
	DefaultHookTimeout      = 30 * time.Second
	DefaultKeyMode          = os.FileMode(0o600)
	DefaultSignal           = syscall.SIGHUP
)

// Config is the validated, defaulted configuration.
type Config struct {
	// Path is the file the configuration was read from.
	Path      string
	Agent     Agent
	Instances []*Instance
}

// Agent holds process-wide settings.
type Agent struct {
	LogLevel  slog.Level // default info
	LogFormat string     // "text" (default) | "json"
	Listen    string     // host:port for /metrics, /livez, /readyz; "" = off
	// APIRate is a known API quota per credentials block (api_rate = "180/m"); the zero
	// value means none is known and pacing starts from the API's answers alone.
	APIRate Rate
	// ShareKeys: instances whose key_rotation is a duration share one agent-wide key
	// until it is that old (share_keys = true). Default false.
	ShareKeys bool
}

// Changed names the attributes of the agent block whose values differ between a and b
// (log_level, log_format, listen, api_rate, share_keys), in that order; nil when none.
func (a Agent) Changed(b Agent) []string {
	var out []string
	for _, f := range []struct {
		name string
		diff bool
	}{
		{"log_level", a.LogLevel != b.LogLevel},
		{"log_format", a.LogFormat != b.LogFormat},
		{"listen", a.Listen != b.Listen},
		{"api_rate", a.APIRate != b.APIRate},
		{"share_keys", a.ShareKeys != b.ShareKeys},
	} {
		if f.diff {
			out = append(out, f.name)
		}
	}
	return out
}

// Rate is a number of requests per period ("180/m" = {N: 180, Per: time.Minute}).
type Rate struct {
	N   int
	Per time.Duration
}

// IsZero reports whether no rate is set.
func (r Rate) IsZero() bool { return r.N == 0 }

// Provider types an instance block may name.
const (
	TypeCloudSQL = "cloudsql"
	TypeAlloyDB  = "alloydb"
	TypeGeminiDB = "geminidb"
)

// DefaultGeminiDBSchedule is when CA-only GeminiDB instances download again.
const DefaultGeminiDBSchedule = "@every 6h"

// Instance is one database instance whose credentials the agent keeps on disk.
type Instance struct {
	Name string // unique across types
	Type string // TypeCloudSQL

	// CloudSQL is set when Type is TypeCloudSQL.
	CloudSQL *CloudSQL
	// AlloyDB is set when Type is TypeAlloyDB.
	AlloyDB *AlloyDB
	// GeminiDB is set when Type is TypeGeminiDB (CA only).
	GeminiDB *GeminiDB

	Renewal  Renewal
	Schedule *Schedule // nil when no schedule is set

	Sinks []FileSink // at least one
	Hooks []Hook     // run in order after every sink is written

	// Connection, when set, makes every file sink also write connection files
	// (pg_service.conf, connection.env, my.cnf; spec §7). nil for none.
	Connection *Connection
}

// Connection is a `connection {}` block: how clients connect to the instance.
type Connection struct {
	User   string // database user (with IAM: the IAM user name)
	DBName string // database (PostgreSQL) / default schema (MySQL); "" = not written
	// IPType picks the address from the API: "public" (default) | "private" | "psc".
	IPType string
	Host   string // "" = the address from the API
	Port   int    // 0 = the engine's default (5432 PostgreSQL, 3306 MySQL)
	// Instance is, for AlloyDB, the instance of the cluster whose connectionInfo gives
	// the address (required there); "" for Cloud SQL.
	Instance string
}

// IssuesClientCert reports whether the instance's provider issues client certificates
// (and so needs a private key); GeminiDB instances are CA-only.
func (in *Instance) IssuesClientCert() bool {
	return in.Type == TypeCloudSQL || in.Type == TypeAlloyDB
}

// CloudSQL selects a Cloud SQL instance and how to reach its Admin API.
type CloudSQL struct {
	Project     string
	Instance    string
	Credentials *GoogleCredentials // never nil: ADC when no block is named or found
	IAMAuthn    bool
	APIEndpoint string // default DefaultCloudSQLEndpoint, always ends in "/"
	APIVersion  string // "v1beta4" (default) | "v1"
	IPType      string // "public" (default) | "private": the address written to .pgpass
}

// AlloyDB selects an AlloyDB cluster and how to reach its Admin API.
type AlloyDB struct {
	Project      string
	Location     string
	Cluster      string
	Credentials  *GoogleCredentials // never nil: ADC when no block is named or found
	CertDuration time.Duration      // hint to the API, 1h..24h; 0 = not sent
	APIEndpoint  string             // default DefaultAlloyDBEndpoint, always ends in "/"
	APIVersion   string             // "v1beta" (default) | "v1" | "v1alpha"
}

// GeminiDB selects a Huawei Cloud GeminiDB instance whose server CA is downloaded.
type GeminiDB struct {
	ProjectID   string
	InstanceID  string
	Credentials *HuaweiCredentials // never nil
	APIEndpoint string             // default https://gaussdb-nosql.<region>.myhuaweicloud.com (no trailing slash)
}

// HuaweiCredentials is a `credentials "huaweicloud"` block; exactly one way to
// authenticate is set: TokenFile; UserName + password + DomainName; AccessKey + secret key.
type HuaweiCredentials struct {
	Name          string
	Region        string
	IAMEndpoint   string // "" = default from Region
	TokenFile     string
	UserName      string
	PasswordFile  string
	Password      Secret // from env("NAME")
	DomainName    string
	ProjectID     string
	AccessKey     string
	SecretKeyFile string
	SecretKey     Secret // from env("NAME")
}

// Secret holds a password or key taken from the environment. It prints as
// [REDACTED] in every format and log, so a logged config never leaks it.
type Secret string

func (Secret) String() string   { return "[REDACTED]" }
func (Secret) GoString() string { return "[REDACTED]" }

// LogValue keeps the value out of slog output.
func (Secret) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Reveal returns the secret's value, for the code that must send it.
func (s Secret) Reveal() string { return string(s) }

// GoogleCredentials selects how Google API tokens are obtained. The zero value (Name
// empty) means Application Default Credentials.
type GoogleCredentials struct {
	Name                      string
	CredentialsFile           string
	ImpersonateServiceAccount string
	TokenFile                 string
	QuotaProject              string
}

// Renewal controls when a certificate is renewed and when its key is replaced.
type Renewal struct {
	// BeforeFraction: renew when this fraction of the effective lifetime is left.
	// Default DefaultRenewFraction. Zero when Before is set instead.
	BeforeFraction float64
	// Before: renew when this much time is left (renew_before = "15m").
	Before time.Duration
	// KeyMaxAge: reuse the private key for new certificates until it is this old.
	// 0 (default, "every-cert") makes a new key for every certificate.
	KeyMaxAge time.Duration
}

// Schedule is a validated cron specification.
type Schedule struct {
	Spec string
	cron.Schedule
}

// Layouts of a file sink.
const (
	LayoutPEM   = "pem"
	LayoutLibpq = "libpq"
)

// FileSink is a `sink "file"` block.
type FileSink struct {
	Dir     string      // absolute; relative paths in the file are resolved against the config's directory
	Layout  string      // LayoutPEM (default) | LayoutLibpq
	UID     int         // -1 when owner is not set
	GID     int         // -1 when group is not set
	KeyMode os.FileMode // default DefaultKeyMode; never has a world bit
	// Token also writes the IAM login token to a "token" file (Cloud SQL; mode KeyMode).
	Token bool
	// PGPassUser, when set (pgpass = true, user = ...), also writes a ".pgpass" line
	// "host:*:*:user:token" for that IAM database user (Cloud SQL; mode 0600).
	PGPassUser string
	// PKCS12, when set, also writes keystore.p12 and truststore.p12 (spec §4).
	PKCS12 *PKCS12
}

// PKCS12 is a sink's `pkcs12 {}` block. Exactly one of PasswordFile and Password is set;
// the password is read at every write.
type PKCS12 struct {
	PasswordFile string
	Password     Secret // from env("NAME")
}

// Hook kinds.
const (
	HookExec   = "exec"
	HookSignal = "signal"
)

// Hook is one `hook` block; exactly one of Exec and Signal is set, matching Kind.
type Hook struct {
	Kind   string
	Exec   *ExecHook
	Signal *SignalHook
}

// ExecHook runs a command (argv, no shell).
type ExecHook struct {
	Command []string
	Timeout time.Duration // default DefaultHookTimeout
	// Env adds variables to the hook's clean environment (env = { NAME = "value" }).
	Env map[string]string
}

// SignalHook signals the process whose pid is in PIDFile.
type SignalHook struct {
	PIDFile string
	Signal  syscall.Signal // default DefaultSignal
}

// Instance returns the instance named name, or nil.
func (c *Config) Instance(name string) *Instance {
	for _, in := range c.Instances {
		if in.Name == name {
			return in
		}
	}
	return nil
}

// InstanceNames lists the instance names in file order.
func (c *Config) InstanceNames() []string {
	names := make([]string, len(c.Instances))
	for i, in := range c.Instances {
		names[i] = in.Name
	}
	return names
}
