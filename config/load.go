package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/wire"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/robfig/cron/v3"

	"github.com/dbcert-agent/dbcert-agent/agent/hook"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Options adjust how a configuration is read. The zero value reads the real environment
// and user database.
type Options struct {
	// LookupEnv backs env(); default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ReadFile backs file(); it returns at most limit+1 bytes so that a larger file is
	// noticed. Default: read the file from disk.
	ReadFile func(path string, limit int64) ([]byte, error)
	// LookupUser and LookupGroup resolve owner/group names to ids; default os/user.
	LookupUser  func(name string) (int, error)
	LookupGroup func(name string) (int, error)
}

func (o *Options) fill() {
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.ReadFile == nil {
		o.ReadFile = func(path string, limit int64) ([]byte, error) {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			return io.ReadAll(io.LimitReader(f, limit+1))
		}
	}
	if o.LookupUser == nil {
		o.LookupUser = func(name string) (int, error) {
			u, err := user.Lookup(name)
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(u.Uid)
		}
	}
	if o.LookupGroup == nil {
		o.LookupGroup = func(name string) (int, error) {
			g, err := user.LookupGroup(name)
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(g.Gid)
		}
	}
}

// ResolvePath picks the config path: flag value if set, else $DBCERT_AGENT_CONFIG, else
// DefaultPath.
func ResolvePath(flag string) string {
	if flag != "" {
		return flag
	}
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	return DefaultPath
}

// Load reads and checks the configuration at path. Errors in the file are returned as
// *DiagError; a file that cannot be read is returned as a plain error naming the path.
// Files larger than MaxFileSize (1 MiB) or nesting deeper than MaxNesting are refused
// with a diagnostic before HCL parses them.
func Load(path string, opts Options) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	// One byte more than allowed is enough to tell that the file is too large.
	src, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, src, opts)
}

// Parse checks configuration source; filename is used in diagnostics and relative paths
// in the file are resolved against its directory. No network calls are made.
func Parse(filename string, src []byte, opts Options) (*Config, error) {
	return parse(filename, src, opts, pieceSize)
}

// parse is Parse with HCL given pieces of at least size bytes (see parseFile). A file
// cut in pieces that turns out to be wrong is parsed again whole, so that what it
// reports is exactly what HCL says of the file.
func parse(filename string, src []byte, opts Options, size int) (*Config, error) {
	opts.fill()
	// Diagnostics are shown with a snippet of the file.
	files := map[string]*hcl.File{filename: {Bytes: src}}
	ends, d := scanFile(filename, src)
	if d != nil {
		return nil, &DiagError{Diags: hcl.Diagnostics{d}, files: files} // HCL never parses it
	}
	file, diags, cut := parseFile(filename, src, ends, size)
	files[filename] = file
	if diags.HasErrors() {
		return nil, &DiagError{Diags: diags, files: files}
	}
	absDir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		return nil, err
	}
	l := &loader{opts: opts, baseDir: absDir, ctx: evalContext(absDir, opts.LookupEnv, opts.ReadFile)}
	cfg := l.load(file.Body)
	l.diags = append(diags, l.diags...)
	if l.diags.HasErrors() {
		if cut {
			return parse(filename, src, opts, len(src)+1)
		}
		return nil, &DiagError{Diags: l.diags, files: files}
	}
	cfg.Path = filename
	return cfg, nil
}

type loader struct {
	opts    Options
	baseDir string
	ctx     *hcl.EvalContext
	diags   hcl.Diagnostics

	google map[string]*GoogleCredentials
	huawei map[string]*HuaweiCredentials

	// schemas caches gohcl.ImpliedBodySchema by file struct type: checkSchema runs for
	// every block, and a config with a thousand instances would otherwise derive the same
	// schemas by reflection a thousand times.
	schemas map[reflect.Type]*hcl.BodySchema
}

func (l *loader) add(d ...*hcl.Diagnostic) { l.diags = append(l.diags, d...) }

func (l *loader) decode(body hcl.Body, v any) bool {
	ds := gohcl.DecodeBody(body, l.ctx, v)
	for _, d := range ds {
		// A failed env() or file() call leaves an unknown value behind, which gohcl
		// reports a second time; the function's own diagnostic already says it all.
		if d.Detail != "Unsuitable value: value must be known" {
			l.add(d)
		}
	}
	return !ds.HasErrors()
}

func (l *loader) load(body hcl.Body) *Config {
	var root fileRoot
	if !l.decode(body, &root) {
		return nil
	}
	cfg := &Config{Agent: l.agent(root.Agents)}
	l.credentials(root.Credentials)
	seen := map[string]hcl.Range{}
	sinkDirs := map[string]hcl.Range{}
	for _, b := range root.Instances {
		if prev, dup := seen[b.Name]; dup {
			l.add(errAt(b.NameRange, "Duplicate instance name",
				fmt.Sprintf("An instance named %q is already defined at %s; names must be unique across types.", b.Name, prev)))
			continue
		}
		seen[b.Name] = b.NameRange
		if in := l.instance(b, sinkDirs); in != nil {
			cfg.Instances = append(cfg.Instances, in)
		}
	}
	return cfg
}

var (
	logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

func (l *loader) agent(blocks []fileAgent) Agent {
	a := Agent{LogLevel: slog.LevelInfo, LogFormat: "text"}
	if len(blocks) > 1 {
		l.add(errAt(blocks[1].DefRange, "Duplicate agent block", "Only one agent block is allowed; merge the settings into the first one."))
	}
	if len(blocks) == 0 {
		return a
	}
	b := blocks[0]
	if b.LogLevel != "" {
		lv, ok := logLevels[b.LogLevel]
		if !ok {
			l.add(errAt(b.LogLevelRange, "Invalid log_level", fmt.Sprintf("log_level must be one of debug, info, warn, error; got %q.", b.LogLevel)))
		}
		a.LogLevel = lv
	}
	switch b.LogFormat {
	case "":
	case "text", "json":
		a.LogFormat = b.LogFormat
	default:
		l.add(errAt(b.LogFormatRange, "Invalid log_format", fmt.Sprintf("log_format must be \"text\" or \"json\"; got %q.", b.LogFormat)))
	}
	if b.Listen != "" {
		if _, port, err := net.SplitHostPort(b.Listen); err != nil || port == "" {
			l.add(errAt(b.ListenRange, "Invalid listen address", fmt.Sprintf("listen must be host:port, such as \"127.0.0.1:9464\"; got %q.", b.Listen)))
		} else if _, err := net.LookupPort("tcp", port); err != nil { // /etc/services only
			l.add(errAt(b.ListenRange, "Invalid listen port", fmt.Sprintf("The port of listen must be a number from 0 to 65535 (or a service name); got %q.", port)))
		}
		a.Listen = b.Listen
	}
	if b.APIRate != "" {
		r, err := ParseRate(b.APIRate)
		if err != nil {
			l.add(errAt(b.APIRateRange, "Invalid api_rate", err.Error()))
		}
		a.APIRate = r
	}
	a.ShareKeys = b.ShareKeys
	return a
}

var rateRE = regexp.MustCompile(`^([0-9]{1,9})/([smh])$`)

// ParseRate parses a request rate "N/s", "N/m" or "N/h" with N > 0.
func ParseRate(s string) (Rate, error) {
	m := rateRE.FindStringSubmatch(s)
	if m == nil {
		return Rate{}, fmt.Errorf("api_rate must be a whole number of requests per second, minute or hour, such as \"180/m\", \"3/s\" or \"5000/h\"; got %q.", s)
	}
	n, _ := strconv.Atoi(m[1])
	if n <= 0 {
		return Rate{}, fmt.Errorf("api_rate must allow at least one request; got %q.", s)
	}
	per := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[m[2]]
	return Rate{N: n, Per: per}, nil
}

var credentialTypes = []string{"google", "huaweicloud"}

func (l *loader) credentials(blocks []fileLabelled2) {
	l.google = map[string]*GoogleCredentials{}
	l.huawei = map[string]*HuaweiCredentials{}
	for _, b := range blocks {
		if b.Type == "huaweicloud" {
			l.huaweiCredentials(b)
			continue
		}
		if b.Type != "google" {
			l.add(errAt(b.TypeRange, "Unsupported credentials type",
				fmt.Sprintf("Credentials type %q is not supported by this version; supported: %s.%s", b.Type, strings.Join(credentialTypes, ", "), suggest(b.Type, credentialTypes))))
			continue
		}
		if _, dup := l.google[b.Name]; dup {
			l.add(errAt(b.NameRange, "Duplicate credentials block", fmt.Sprintf("credentials %q %q is defined twice.", b.Type, b.Name)))
			continue
		}
		var f fileGoogleCredentials
		if !l.decode(b.Body, &f) {
			continue
		}
		if f.CredentialsFile != "" && f.TokenFile != "" {
			l.add(errAt(f.TokenFileRange, "Conflicting credentials",
				"Set either credentials_file or token_file, not both: token_file is a ready bearer token, credentials_file makes tokens itself."))
		}
		l.google[b.Name] = &GoogleCredentials{
			Name:                      b.Name,
			CredentialsFile:           l.path(f.CredentialsFile),
			ImpersonateServiceAccount: f.ImpersonateServiceAccount,
			TokenFile:                 l.path(f.TokenFile),
			QuotaProject:              f.QuotaProject,
		}
	}
}

func (l *loader) huaweiCredentials(b fileLabelled2) {
	if _, dup := l.huawei[b.Name]; dup {
		l.add(errAt(b.NameRange, "Duplicate credentials block", fmt.Sprintf("credentials %q %q is defined twice.", b.Type, b.Name)))
		return
	}
	var f fileHuaweiCredentials
	if !l.decode(b.Body, &f) {
		return
	}
	c := &HuaweiCredentials{
		Name: b.Name, Region: f.Region, TokenFile: l.path(f.TokenFile),
		UserName: f.UserName, PasswordFile: l.path(f.PasswordFile), DomainName: f.DomainName, ProjectID: f.ProjectID,
		AccessKey: f.AccessKey, SecretKeyFile: l.path(f.SecretKeyFile),
		Password:  l.secret(f.Password, f.PasswordRange, "password", "password_file"),
		SecretKey: l.secret(f.SecretKey, f.SecretKeyRange, "secret_key", "secret_key_file"),
	}
	if f.IAMEndpoint != "" {
		if ep, ok := l.endpoint(f.IAMEndpoint, f.IAMEndpointRange); ok {
			c.IAMEndpoint = strings.TrimSuffix(ep, "/")
		}
	}
	var methods []string
	if c.TokenFile != "" {
		methods = append(methods, "token_file")
	}
	if c.UserName != "" || c.PasswordFile != "" || c.Password != "" || c.DomainName != "" {
		methods = append(methods, "user_name + password_file + domain_name")
		if c.UserName == "" || (c.PasswordFile == "") == (c.Password == "") || c.DomainName == "" {
			l.add(errAt(b.DefRange, "Incomplete IAM password authentication",
				"IAM password authentication needs user_name, domain_name and exactly one of password_file or password = env(\"NAME\")."))
		}
	}
	if c.AccessKey != "" || c.SecretKeyFile != "" || c.SecretKey != "" {
		methods = append(methods, "access_key + secret_key_file")
		if c.AccessKey == "" || (c.SecretKeyFile == "") == (c.SecretKey == "") {
			l.add(errAt(b.DefRange, "Incomplete AK/SK authentication",
				"AK/SK request signing needs access_key and exactly one of secret_key_file or secret_key = env(\"NAME\")."))
		}
	}
	switch {
	case len(methods) == 0:
		l.add(errAt(b.DefRange, "No authentication method",
			"Set exactly one way to authenticate: token_file; user_name + password_file + domain_name; or access_key + secret_key_file."))
	case len(methods) > 1:
		l.add(errAt(b.DefRange, "More than one authentication method",
			fmt.Sprintf("credentials \"huaweicloud\" %q sets %s; keep exactly one.", b.Name, strings.Join(methods, " and "))))
	}
	switch {
	case c.Region == "" && c.IAMEndpoint == "":
		l.add(errAt(b.DefRange, "Missing region", "Set region (such as \"cn-north-4\"); it picks the IAM and GeminiDB endpoints."))
	case c.Region != "" && !huaweiauth.ValidRegion(c.Region):
		l.add(errAt(f.RegionRange, "Invalid region", fmt.Sprintf("region must be a region id such as \"cn-north-4\" (lower-case letters and digits joined by '-'); got %q.", c.Region)))
	}
	l.huawei[b.Name] = c
}

// rejectedSecret stands in for a secret already reported as an error, so the checks
// that follow do not also call it missing. The configuration never loads with it.
const rejectedSecret Secret = "rejected"

// secret evaluates a password or secret key attribute, which may only be env("NAME"):
// a literal secret would sit in the config file and be echoed by diagnostics. The
// diagnostics about it therefore carry no source snippet.
func (l *loader) secret(expr hcl.Expression, rng hcl.Range, attr, fileAttr string) Secret {
	if rng.Filename == "" {
		return "" // not set
	}
	where := fmt.Sprintf("%s:%d:%d", rng.Filename, rng.Start.Line, rng.Start.Column)
	call, ok := expr.(*hclsyntax.FunctionCallExpr)
	if !ok || call.Name != "env" {
		l.add(&hcl.Diagnostic{Severity: hcl.DiagError,
			Summary: fmt.Sprintf("Literal secret in %s at %s", attr, where),
			Detail:  fmt.Sprintf("%s must not be written into the config file. Put it in a file and set %s, or set %s = env(\"NAME\").", attr, fileAttr, attr)})
		return rejectedSecret
	}
	v, ds := expr.Value(l.ctx)
	if ds.HasErrors() {
		l.add(ds...)
		return ""
	}
	if v.Type() != cty.String || v.IsNull() || v.AsString() == "" {
		l.add(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: fmt.Sprintf("Empty %s at %s", attr, where),
			Detail: fmt.Sprintf("The environment variable for %s is empty.", attr)})
		return ""
	}
	return Secret(v.AsString())
}

// path resolves p against the config's directory; "" stays "".
func (l *loader) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(l.baseDir, p)
}

var instanceTypes = []string{TypeCloudSQL, TypeAlloyDB, TypeGeminiDB}

func (l *loader) instance(b fileLabelled2, sinkDirs map[string]hcl.Range) *Instance {
	if !nameRE.MatchString(b.Name) {
		l.add(errAt(b.NameRange, "Invalid instance name",
			fmt.Sprintf("Instance name %q must start with a letter or digit and hold only letters, digits, '.', '_' and '-'.", b.Name)))
		return nil
	}
	var typed any
	switch b.Type {
	case TypeCloudSQL:
		typed = &fileCloudSQL{}
	case TypeAlloyDB:
		typed = &fileAlloyDB{}
	case TypeGeminiDB:
		typed = &fileGeminiDB{}
	default:
		l.add(errAt(b.TypeRange, "Unsupported instance type",
			fmt.Sprintf("Instance type %q is not supported by this version; supported: %s.%s", b.Type, strings.Join(instanceTypes, ", "), suggest(b.Type, instanceTypes))))
		return nil
	}
	// Check the union of the common and the type's schema first, so an unknown name is
	// reported once, with suggestions drawn from every valid name.
	var common fileInstanceCommon
	if !l.checkSchema(b.Body, &common, typed) || !l.decode(b.Body, &common) || !l.decode(common.Remain, typed) {
		return nil
	}
	in := &Instance{Name: b.Name, Type: b.Type}
	switch t := typed.(type) {
	case *fileCloudSQL:
		in.CloudSQL = l.cloudSQL(t)
	case *fileAlloyDB:
		in.AlloyDB = l.alloyDB(t)
	case *fileGeminiDB:
		in.GeminiDB = l.geminiDB(t)
		if common.Schedule == "" {
			common.Schedule = DefaultGeminiDBSchedule
		}
	}
	if len(common.Connections) > 0 {
		in.Connection = l.connection(in, common.Connections, typed)
	}
	l.renewal(&in.Renewal, common)
	if common.Schedule != "" {
		if s, ok := l.schedule(common.Schedule, common.ScheduleRange); ok {
			in.Schedule = &Schedule{Spec: common.Schedule, Schedule: s}
		}
	}
	if len(common.Sinks) == 0 {
		l.add(errAt(b.DefRange, "Missing sink", fmt.Sprintf("Instance %q has no sink block; add at least one, e.g. sink \"file\" { dir = \"/var/lib/dbcert-agent/%s\" }.", b.Name, b.Name)))
	}
	for _, sb := range common.Sinks {
		if s, ok := l.sink(sb, sinkDirs); ok {
			if (s.Token || s.PGPassUser != "") && !l.loginTokensOK(in, sb.DefRange) {
				continue
			}
			if in.Connection != nil && (unsafeText(s.Dir) || strings.ContainsAny(s.Dir, quoteChars)) {
				l.add(errAt(sb.DefRange, "Directory unusable in connection files",
					fmt.Sprintf("The sink's dir %q holds a control character (such as a newline) or a quote, so the connection files cannot name its files safely (connection.env cannot hold a single quote, my.cnf a double quote); use another directory.", s.Dir)))
				continue
			}
			in.Sinks = append(in.Sinks, s)
		}
	}
	for _, hb := range common.Hooks {
		if h, ok := l.hook(hb); ok {
			in.Hooks = append(in.Hooks, h)
		}
	}
	return in
}

// IP types of a connection block; the first is the default.
var ipTypes = []string{"public", "private", "psc"}

// connection checks an instance's connection block (spec §7). For Cloud SQL the
// effective ip_type is the connection's when it sets one, else the instance's own
// ip_type attribute (which predates the block and picks the .pgpass address), else
// "public"; both set and different is an error. CloudSQL.IPType is set to the
// effective value, so the provider picks one address for every file.
func (l *loader) connection(in *Instance, blocks []fileConnection, typed any) *Connection {
	if len(blocks) > 1 {
		l.add(errAt(blocks[1].DefRange, "Duplicate connection block", fmt.Sprintf("Instance %q has more than one connection block; keep one.", in.Name)))
	}
	f := blocks[0]
	if in.Type == TypeGeminiDB {
		l.add(errAt(f.DefRange, "No connection files for GeminiDB",
			fmt.Sprintf("Instance %q is a GeminiDB instance: the agent only downloads its server CA, so there are no connection files to write; remove the connection block.", in.Name)))
		return nil
	}
	c := &Connection{User: f.User, DBName: f.DBName, Host: f.Host, Port: f.Port, Instance: f.Instance, IPType: "public"}
	for _, v := range []struct {
		val  string
		rng  hcl.Range
		name string
	}{{f.User, f.UserRange, "user"}, {f.DBName, f.DBNameRange, "dbname"}, {f.Host, f.HostRange, "host"}, {f.Instance, f.InstanceRange, "instance"}} {
		switch {
		case unsafeText(v.val):
			l.add(errAt(v.rng, "Unsafe "+v.name,
				fmt.Sprintf("connection %s holds a control character (such as a newline, carriage return or NUL), which cannot be written safely into pg_service.conf, connection.env or my.cnf.", v.name)))
		case strings.ContainsAny(v.val, quoteChars):
			l.add(errAt(v.rng, "Unsafe "+v.name,
				fmt.Sprintf("connection %s %q holds a quote, which cannot be written safely: connection.env cannot hold a single quote, my.cnf a double quote.", v.name, v.val)))
		case strings.TrimSpace(v.val) != v.val && v.name != "host": // host: "Invalid host" below
			l.add(errAt(v.rng, "Unsafe "+v.name,
				fmt.Sprintf("connection %s %q starts or ends with white space, which pg_service.conf cannot keep; remove it.", v.name, v.val)))
		}
	}
	if f.Host != "" && strings.TrimSpace(f.Host) != f.Host || strings.ContainsAny(f.Host, " /") {
		l.add(errAt(f.HostRange, "Invalid host", fmt.Sprintf("host must be a host name or IP address without spaces or slashes; got %q.", f.Host)))
	}
	if f.Port < 0 || f.Port > 65535 {
		l.add(errAt(f.PortRange, "Invalid port", fmt.Sprintf("port must be between 1 and 65535 (or left out for the engine's default); got %d.", f.Port)))
	}
	if f.IPType != "" {
		if !slices.Contains(ipTypes, f.IPType) {
			l.add(errAt(f.IPTypeRange, "Invalid ip_type",
				fmt.Sprintf("ip_type must be \"public\", \"private\" or \"psc\"; got %q.%s", f.IPType, suggest(f.IPType, ipTypes))))
		} else {
			c.IPType = f.IPType
		}
	}
	switch t := typed.(type) {
	case *fileCloudSQL:
		if f.Instance != "" {
			l.add(errAt(f.InstanceRange, "instance not allowed here",
				"connection instance names an AlloyDB instance of a cluster; a Cloud SQL instance is already named by the instance attribute above. Remove it."))
		}
		switch {
		case t.IPType != "" && f.IPType != "" && t.IPType != f.IPType:
			l.add(errAt(f.IPTypeRange, "Conflicting ip_type",
				fmt.Sprintf("The instance sets ip_type = %q and its connection block ip_type = %q; one address serves every file, so keep one of them (the connection block's is enough).", t.IPType, f.IPType)))
		case f.IPType == "" && in.CloudSQL != nil:
			c.IPType = in.CloudSQL.IPType // the instance's ip_type, default public
		}
		if in.CloudSQL != nil {
			in.CloudSQL.IPType = c.IPType
		}
	case *fileAlloyDB:
		switch {
		case f.Instance == "":
			l.add(errAt(f.DefRange, "Missing instance",
				"An AlloyDB connection block needs instance = \"NAME\": the instance of the cluster whose address the connection files use."))
		case strings.ContainsAny(f.Instance, "/:"):
			l.add(errAt(f.InstanceRange, "Invalid instance",
				fmt.Sprintf("instance must be the name of an instance of the cluster, not a path; got %q.", f.Instance)))
		}
	}
	return c
}

// unsafeText reports whether s holds an ASCII control character (newline, carriage
// return, NUL, ...) or DEL, which no connection file format can carry safely.
// quoteChars cannot be written into every connection file: connection.env quotes
// values in single quotes and my.cnf in double quotes, and neither has an escape that
// all of its readers share.
const quoteChars = `'"`

func unsafeText(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// loginTokensOK checks that a sink asking for the IAM login token (token, pgpass)
// belongs to a Cloud SQL instance whose credentials can make login tokens.
func (l *loader) loginTokensOK(in *Instance, rng hcl.Range) bool {
	if in.CloudSQL == nil {
		l.add(errAt(rng, "No login token for this instance type",
			fmt.Sprintf("token and pgpass write Cloud SQL IAM login tokens; instance %q is %q.", in.Name, in.Type)))
		return false
	}
	if c := in.CloudSQL.Credentials; c != nil && c.TokenFile != "" {
		l.add(errAt(rng, "token and pgpass need credentials that make tokens",
			fmt.Sprintf("credentials %q use token_file, which cannot make sqlservice.login tokens with a known expiry; use credentials_file, impersonation or Application Default Credentials.", c.Name)))
		return false
	}
	return true
}

// checkSchema validates body against the union of the schemas of parts.
func (l *loader) checkSchema(body hcl.Body, parts ...any) bool {
	var schema hcl.BodySchema
	for _, p := range parts {
		s := l.schemaOf(p)
		schema.Attributes = append(schema.Attributes, s.Attributes...)
		schema.Blocks = append(schema.Blocks, s.Blocks...)
	}
	_, ds := body.Content(&schema)
	l.add(ds...)
	return !ds.HasErrors()
}

// schemaOf is gohcl.ImpliedBodySchema(p), derived once per type.
func (l *loader) schemaOf(p any) *hcl.BodySchema {
	t := reflect.TypeOf(p)
	if s, ok := l.schemas[t]; ok {
		return s
	}
	s, _ := gohcl.ImpliedBodySchema(p)
	if l.schemas == nil {
		l.schemas = map[reflect.Type]*hcl.BodySchema{}
	}
	l.schemas[t] = s
	return s
}

func (l *loader) cloudSQL(f *fileCloudSQL) *CloudSQL {
	c := &CloudSQL{
		Project:     f.Project,
		Instance:    f.Instance,
		IAMAuthn:    f.IAMAuthn,
		APIEndpoint: DefaultCloudSQLEndpoint,
		APIVersion:  DefaultCloudSQLVersion,
	}
	l.nonEmpty(f.Project, f.ProjectRange, "project", "the Google Cloud project ID, such as \"my-proj\"")
	l.nonEmpty(f.Instance, f.InstanceRange, "instance", "the Cloud SQL instance name only (no project or region)")
	if strings.Contains(f.Instance, ":") {
		l.add(errAt(f.InstanceRange, "Invalid instance", fmt.Sprintf("instance must be the instance name only, not a connection name; got %q. Put the project in project.", f.Instance)))
	}
	if f.APIEndpoint != "" {
		if ep, ok := l.endpoint(f.APIEndpoint, f.APIEndpointRange); ok {
			c.APIEndpoint = ep
		}
	}
	switch f.APIVersion {
	case "":
	case "v1beta4", "v1":
		c.APIVersion = f.APIVersion
	default:
		l.add(errAt(f.APIVersionRange, "Invalid api_version",
			fmt.Sprintf("api_version must be \"v1beta4\" or \"v1\"; got %q.%s", f.APIVersion, suggest(f.APIVersion, []string{"v1beta4", "v1"}))))
	}
	switch f.IPType {
	case "", "public":
		c.IPType = "public"
	case "private":
		c.IPType = "private"
	default:
		l.add(errAt(f.IPTypeRange, "Invalid ip_type", fmt.Sprintf("ip_type must be \"public\" or \"private\"; got %q.", f.IPType)))
	}
	c.Credentials = l.googleRef(f.Credentials, f.CredentialsRange)
	if f.IAMAuthn && c.Credentials.TokenFile != "" {
		l.add(errAt(f.IAMAuthnRange, "iam_authn needs credentials that make tokens",
			fmt.Sprintf("iam_authn embeds a sqlservice.login token with a known expiry in each certificate, but credentials %q use token_file, whose tokens have neither; use credentials_file, impersonation or Application Default Credentials.", c.Credentials.Name)))
	}
	return c
}

func (l *loader) alloyDB(f *fileAlloyDB) *AlloyDB {
	a := &AlloyDB{
		Project:     f.Project,
		Location:    f.Location,
		Cluster:     f.Cluster,
		APIEndpoint: DefaultAlloyDBEndpoint,
		APIVersion:  DefaultAlloyDBVersion,
	}
	l.nonEmpty(f.Project, f.ProjectRange, "project", "the Google Cloud project ID, such as \"my-proj\"")
	l.nonEmpty(f.Location, f.LocationRange, "location", "the cluster's region, such as \"us-central1\"")
	l.nonEmpty(f.Cluster, f.ClusterRange, "cluster", "the AlloyDB cluster name")
	for _, v := range []struct {
		val  string
		rng  hcl.Range
		name string
	}{{f.Project, f.ProjectRange, "project"}, {f.Location, f.LocationRange, "location"}, {f.Cluster, f.ClusterRange, "cluster"}} {
		if strings.ContainsAny(v.val, "/:") {
			l.add(errAt(v.rng, "Invalid "+v.name, fmt.Sprintf("%s must be a plain name, not a path or connection name; got %q.", v.name, v.val)))
		}
	}
	if f.CertDuration != "" {
		d, err := time.ParseDuration(f.CertDuration)
		if err != nil || d < time.Hour || d > 24*time.Hour {
			l.add(errAt(f.CertDurationRange, "Invalid cert_duration",
				fmt.Sprintf("cert_duration is a hint to the AlloyDB API between 1h and 24h; got %q.", f.CertDuration)))
		}
		a.CertDuration = d
	}
	if f.APIEndpoint != "" {
		if ep, ok := l.endpoint(f.APIEndpoint, f.APIEndpointRange); ok {
			a.APIEndpoint = ep
		}
	}
	switch f.APIVersion {
	case "":
	case "v1beta", "v1", "v1alpha":
		a.APIVersion = f.APIVersion
	default:
		l.add(errAt(f.APIVersionRange, "Invalid api_version",
			fmt.Sprintf("api_version must be \"v1beta\", \"v1\" or \"v1alpha\"; got %q.%s", f.APIVersion, suggest(f.APIVersion, []string{"v1beta", "v1", "v1alpha"}))))
	}
	a.Credentials = l.googleRef(f.Credentials, f.CredentialsRange)
	return a
}

func (l *loader) geminiDB(f *fileGeminiDB) *GeminiDB {
	g := &GeminiDB{ProjectID: f.ProjectID, InstanceID: f.InstanceID}
	l.nonEmpty(f.ProjectID, f.ProjectIDRange, "project_id", "the Huawei Cloud project ID (32 hex digits)")
	l.nonEmpty(f.InstanceID, f.InstanceIDRange, "instance_id", "the GeminiDB instance ID")
	g.Credentials = l.huaweiRef(f.Credentials, f.CredentialsRange)
	switch {
	case f.APIEndpoint != "":
		if ep, ok := l.endpoint(f.APIEndpoint, f.APIEndpointRange); ok {
			g.APIEndpoint = strings.TrimSuffix(ep, "/")
		}
	case g.Credentials != nil && g.Credentials.Region != "":
		g.APIEndpoint = "https://gaussdb-nosql." + g.Credentials.Region + ".myhuaweicloud.com"
	case g.Credentials != nil:
		l.add(errAt(f.ProjectIDRange, "No GeminiDB endpoint",
			fmt.Sprintf("Set api_endpoint, or region in credentials \"huaweicloud\" %q.", g.Credentials.Name)))
	}
	return g
}

// huaweiRef resolves a geminidb instance's credentials attribute; unset means the
// huaweicloud block named "default".
func (l *loader) huaweiRef(name string, rng hcl.Range) *HuaweiCredentials {
	want := name
	if want == "" {
		want = "default"
	}
	if c, ok := l.huawei[want]; ok {
		return c
	}
	names := make([]string, 0, len(l.huawei))
	for n := range l.huawei {
		names = append(names, n)
	}
	hint := suggest(want, names)
	if _, isGoogle := l.google[want]; isGoogle {
		hint = fmt.Sprintf(" %q is a credentials \"google\" block; GeminiDB is a Huawei Cloud service and needs a credentials \"huaweicloud\" block.", want)
	}
	if name == "" {
		l.add(errAt(rng, "No Huawei Cloud credentials",
			"A geminidb instance needs a credentials \"huaweicloud\" block: name it \"default\" or set credentials = \"NAME\"."+hint))
		return nil
	}
	l.add(errAt(rng, "Unknown credentials", fmt.Sprintf("No credentials \"huaweicloud\" %q block is defined.%s", name, hint)))
	return nil
}

// googleRef resolves an instance's credentials attribute. Unset means the block named
// "default" when there is one, else Application Default Credentials.
func (l *loader) googleRef(name string, rng hcl.Range) *GoogleCredentials {
	if name == "" {
		if c, ok := l.google["default"]; ok {
			return c
		}
		return &GoogleCredentials{}
	}
	if c, ok := l.google[name]; ok {
		return c
	}
	if _, isHuawei := l.huawei[name]; isHuawei {
		l.add(errAt(rng, "Wrong kind of credentials",
			fmt.Sprintf("%q is a credentials \"huaweicloud\" block; Google Cloud instances need a credentials \"google\" block.", name)))
		return &GoogleCredentials{}
	}
	names := make([]string, 0, len(l.google))
	for n := range l.google {
		names = append(names, n)
	}
	l.add(errAt(rng, "Unknown credentials",
		fmt.Sprintf("No credentials \"google\" %q block is defined.%s Remove the attribute to use Application Default Credentials.", name, suggest(name, names))))
	return &GoogleCredentials{}
}

func (l *loader) nonEmpty(v string, rng hcl.Range, attr, what string) {
	if strings.TrimSpace(v) == "" {
		l.add(errAt(rng, "Empty "+attr, fmt.Sprintf("%s must be set: %s.", attr, what)))
	}
}

// endpoint checks an api_endpoint: https, or http on a loopback host; returns it with a
// trailing slash.
func (l *loader) endpoint(raw string, rng hcl.Range) (string, bool) {
	u, err := wire.CheckEndpoint("api_endpoint", raw)
	switch {
	case errors.Is(err, wire.ErrInsecure):
		l.add(errAt(rng, "Insecure api_endpoint",
			fmt.Sprintf("api_endpoint %q uses http://, which is allowed only for loopback addresses (127.0.0.0/8, ::1, localhost); use https://.", raw)))
		return "", false
	case err != nil:
		l.add(errAt(rng, "Invalid api_endpoint", fmt.Sprintf("api_endpoint must be an absolute https:// URL without query, fragment or user info; got %q.", raw)))
		return "", false
	}
	return u.String(), true
}

// IsLoopbackHost reports whether host is localhost or a loopback IP address.
func IsLoopbackHost(host string) bool { return wire.IsLoopbackHost(host) }

// schedule parses an instance's schedule: cron fields or a descriptor. It refuses one
// that never fires (such as "0 0 30 2 *") and an "@every" that is not positive (the
// cron library would take "@every -5m" as every second).
func (l *loader) schedule(spec string, rng hcl.Range) (cron.Schedule, bool) {
	s, err := cron.ParseStandard(spec)
	if err != nil {
		l.add(errAt(rng, "Invalid schedule",
			fmt.Sprintf("%v. Use 5 cron fields (\"0 3 * * *\"), a descriptor (\"@daily\", \"@every 6h\"), optionally after CRON_TZ=Area/City.", err)))
		return nil, false
	}
	// The cron library reads a TZ= or CRON_TZ= prefix first, then the descriptor.
	rest := strings.TrimSpace(spec)
	if strings.HasPrefix(rest, "TZ=") || strings.HasPrefix(rest, "CRON_TZ=") {
		_, rest, _ = strings.Cut(rest, " ")
		rest = strings.TrimSpace(rest)
	}
	if every, ok := strings.CutPrefix(rest, "@every "); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(every)); err != nil || d <= 0 {
			l.add(errAt(rng, "Invalid schedule", fmt.Sprintf("@every needs a positive duration, such as \"@every 6h\"; got %q.", spec)))
			return nil, false
		}
	}
	if s.Next(time.Now()).IsZero() {
		l.add(errAt(rng, "Schedule never fires", fmt.Sprintf("%q matches no time in the next five years (a day that does not exist in its month?); fix the fields.", spec)))
		return nil, false
	}
	return s, true
}

func (l *loader) renewal(r *Renewal, c fileInstanceCommon) {
	r.BeforeFraction = DefaultRenewFraction
	if v := c.RenewBefore; v != "" {
		if pct, ok := strings.CutSuffix(v, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
			if err != nil || !(f > 0 && f < 100) { // NaN is neither
				l.add(errAt(c.RenewBeforeRange, "Invalid renew_before", fmt.Sprintf("A percentage must be above 0%% and below 100%%; got %q.", v)))
			}
			r.BeforeFraction = f / 100
		} else {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				l.add(errAt(c.RenewBeforeRange, "Invalid renew_before", fmt.Sprintf("renew_before must be a percentage of the lifetime (\"33%%\") or a positive duration (\"15m\"); got %q.", v)))
			}
			r.BeforeFraction, r.Before = 0, d
		}
	}
	switch v := c.KeyRotation; v {
	case "", "every-cert":
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			l.add(errAt(c.KeyRotationRange, "Invalid key_rotation", fmt.Sprintf("key_rotation must be \"every-cert\" or a positive duration (\"24h\"); got %q.", v)))
		}
		r.KeyMaxAge = d
	}
}

var sinkTypes = []string{"file"}

func (l *loader) sink(b fileLabelled1, dirs map[string]hcl.Range) (FileSink, bool) {
	s := FileSink{Layout: LayoutPEM, UID: -1, GID: -1, KeyMode: DefaultKeyMode}
	if b.Type != "file" {
		l.add(errAt(b.TypeRange, "Unsupported sink type", fmt.Sprintf("Sink type %q is not supported; supported: file.%s", b.Type, suggest(b.Type, sinkTypes))))
		return s, false
	}
	var f fileFileSink
	if !l.decode(b.Body, &f) {
		return s, false
	}
	before := len(l.diags)
	l.nonEmpty(f.Dir, f.DirRange, "dir", "the directory this sink owns")
	s.Dir = filepath.Clean(l.path(f.Dir))
	if s.Dir == "/" {
		l.add(errAt(f.DirRange, "Invalid dir", "dir must not be the root directory: the sink owns its directory (it locks it and prunes old generations in it); use a directory of its own."))
	}
	if prev, dup := dirs[s.Dir]; dup && f.Dir != "" {
		l.add(errAt(f.DirRange, "Directory used twice", fmt.Sprintf("%s is already the dir of the sink at %s; each sink needs a directory of its own.", s.Dir, prev)))
	}
	dirs[s.Dir] = f.DirRange
	switch f.Layout {
	case "":
	case LayoutPEM, LayoutLibpq:
		s.Layout = f.Layout
	default:
		l.add(errAt(f.LayoutRange, "Invalid layout", fmt.Sprintf("layout must be \"pem\" or \"libpq\"; got %q.%s", f.Layout, suggest(f.Layout, []string{LayoutPEM, LayoutLibpq}))))
	}
	if f.Mode != "" {
		m, err := strconv.ParseUint(f.Mode, 8, 32)
		switch {
		case err != nil || m > 0o777:
			l.add(errAt(f.ModeRange, "Invalid mode", fmt.Sprintf("mode must be an octal string such as \"0600\"; got %q.", f.Mode)))
		case m&0o007 != 0:
			l.add(errAt(f.ModeRange, "Private key readable by others",
				fmt.Sprintf("mode %q gives world access to the private key; use \"0600\" (or \"0640\" with a group).", f.Mode)))
		case m&0o400 == 0:
			l.add(errAt(f.ModeRange, "Invalid mode", fmt.Sprintf("mode %q does not let the owner read the key.", f.Mode)))
		default:
			s.KeyMode = os.FileMode(m)
		}
	}
	s.Token = f.Token
	switch {
	case f.PGPass && f.User == "":
		l.add(errAt(f.PGPassRange, "Missing user", "pgpass = true needs user: the IAM database user the .pgpass line is for."))
	case !f.PGPass && f.User != "":
		l.add(errAt(f.UserRange, "user without pgpass", "user is only used for the .pgpass line; set pgpass = true or remove user."))
	case strings.HasSuffix(f.User, ".gserviceaccount.com"):
		l.add(errAt(f.UserRange, "Invalid database user",
			fmt.Sprintf("Cloud SQL names a service account's database user without \".gserviceaccount.com\": use %q.", strings.TrimSuffix(f.User, ".gserviceaccount.com"))))
	case f.PGPass:
		s.PGPassUser = f.User
	}
	if len(f.PKCS12) > 1 {
		l.add(errAt(f.PKCS12[1].DefRange, "Duplicate pkcs12 block", "A sink writes one keystore.p12 and one truststore.p12; keep one pkcs12 block."))
	}
	if len(f.PKCS12) > 0 {
		s.PKCS12 = l.pkcs12(f.PKCS12[0])
	}
	if f.Owner != "" {
		s.UID = l.id(f.Owner, f.OwnerRange, "owner", l.opts.LookupUser)
	}
	if f.Group != "" {
		s.GID = l.id(f.Group, f.GroupRange, "group", l.opts.LookupGroup)
	}
	return s, len(l.diags) == before
}

// pkcs12 checks a sink's pkcs12 block: exactly one of password_file and
// password = env("NAME"); a literal password is refused without being echoed.
func (l *loader) pkcs12(f filePKCS12) *PKCS12 {
	p := &PKCS12{
		PasswordFile: l.path(f.PasswordFile),
		Password:     l.secret(f.Password, f.PasswordRange, "password", "password_file"),
	}
	if f.PasswordFileRange.Filename != "" && f.PasswordFile == "" {
		l.add(errAt(f.PasswordFileRange, "Empty password_file", "password_file must name the file holding the keystore password."))
	}
	switch {
	case p.PasswordFile != "" && f.PasswordRange.Filename != "":
		l.add(errAt(f.DefRange, "Two keystore passwords",
			"Set either password_file or password = env(\"NAME\") in the pkcs12 block, not both."))
	case p.PasswordFile == "" && f.PasswordRange.Filename == "" && f.PasswordFileRange.Filename == "":
		l.add(errAt(f.DefRange, "Missing keystore password",
			"The pkcs12 block needs password_file = \"/etc/dbcert-agent/keystore.pass\" or password = env(\"NAME\"): keystore.p12 and truststore.p12 are protected by that password."))
	}
	return p
}

// id resolves a user or group given by name or number.
func (l *loader) id(v string, rng hcl.Range, attr string, lookup func(string) (int, error)) int {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			l.add(errAt(rng, "Invalid "+attr, fmt.Sprintf("%s must be a name or a non-negative number; got %q.", attr, v)))
		}
		return n
	}
	n, err := lookup(v)
	if err != nil {
		l.add(errAt(rng, "Unknown "+attr, fmt.Sprintf("%s %q does not exist on this machine (%v); create it or give a numeric id.", attr, v, err)))
		return -1
	}
	return n
}

var hookTypes = []string{HookExec, HookSignal}

func (l *loader) hook(b fileLabelled1) (Hook, bool) {
	before := len(l.diags)
	switch b.Type {
	case HookExec:
		var f fileExecHook
		if !l.decode(b.Body, &f) {
			return Hook{}, false
		}
		h := &ExecHook{Command: f.Command, Timeout: DefaultHookTimeout}
		if len(f.Command) == 0 || f.Command[0] == "" {
			l.add(errAt(f.CommandRange, "Empty command", "command must name a program and its arguments, such as [\"/usr/bin/systemctl\", \"reload\", \"myapp\"]."))
		} else if _, err := hook.CheckCommand(f.Command[0]); err != nil {
			// The same check the agent makes when it builds the hook, so validate
			// refuses what once and run would.
			l.add(errAt(f.CommandRange, "Unusable command", err.Error()+"."))
		}
		if f.Timeout != "" {
			d, err := time.ParseDuration(f.Timeout)
			if err != nil || d <= 0 {
				l.add(errAt(f.TimeoutRange, "Invalid timeout", fmt.Sprintf("timeout must be a positive duration such as \"30s\"; got %q.", f.Timeout)))
			}
			h.Timeout = d
		}
		if f.EnvRange.Filename != "" {
			h.Env = l.hookEnv(f.Env, f.EnvRange)
		}
		return Hook{Kind: HookExec, Exec: h}, len(l.diags) == before
	case HookSignal:
		var f fileSignalHook
		if !l.decode(b.Body, &f) {
			return Hook{}, false
		}
		h := &SignalHook{PIDFile: l.path(f.PIDFile), Signal: DefaultSignal}
		l.nonEmpty(f.PIDFile, f.PIDFileRange, "pid_file", "the file holding the pid to signal")
		if f.Signal != "" {
			sig, err := ParseSignal(f.Signal)
			if err != nil {
				l.add(errAt(f.SignalRange, "Invalid signal", err.Error()))
			}
			h.Signal = sig
		}
		return Hook{Kind: HookSignal, Signal: h}, len(l.diags) == before
	}
	l.add(errAt(b.TypeRange, "Unsupported hook type", fmt.Sprintf("Hook type %q is not supported; supported: exec, signal.%s", b.Type, suggest(b.Type, hookTypes))))
	return Hook{}, false
}

// hookEnv evaluates an exec hook's env = { NAME = "value" }. Names are shell-style
// variable names; DBCERT_* names are the agent's own and cannot be overridden (a hook
// could otherwise be told the wrong files); values cannot hold NUL. Values are never
// echoed in diagnostics.
func (l *loader) hookEnv(expr hcl.Expression, rng hcl.Range) map[string]string {
	env := map[string]string{}
	v, ds := expr.Value(l.ctx)
	if ds.HasErrors() {
		l.add(ds...)
		return env
	}
	if v.IsNull() || !v.IsKnown() || !(v.Type().IsObjectType() || v.Type().IsMapType()) {
		l.add(errAt(rng, "Invalid env", "env must be an object of variable names and string values, such as env = { APP_MODE = \"reload\" }."))
		return env
	}
	// Key ranges, for pointing at the offending name.
	keyRange := map[string]hcl.Range{}
	if oc, ok := expr.(*hclsyntax.ObjectConsExpr); ok {
		for _, item := range oc.Items {
			if kv, kd := item.KeyExpr.Value(l.ctx); !kd.HasErrors() && kv.Type() == cty.String && kv.IsKnown() && !kv.IsNull() {
				keyRange[kv.AsString()] = item.KeyExpr.Range()
			}
		}
	}
	for it := v.ElementIterator(); it.Next(); {
		k, val := it.Element()
		name := k.AsString()
		at := rng
		if r, ok := keyRange[name]; ok {
			at = r
		}
		if err := hook.CheckEnvName(name); err != nil {
			l.add(errAt(at, "Invalid environment variable name", err.Error()+"."))
			continue
		}
		sv, err := convertString(val)
		if err != nil {
			l.add(errAt(at, "Invalid environment variable value", fmt.Sprintf("The value of %s must be a string.", name)))
			continue
		}
		if strings.ContainsRune(sv, 0) {
			l.add(errAt(at, "Invalid environment variable value", fmt.Sprintf("The value of %s holds a NUL character, which an environment cannot carry.", name)))
			continue
		}
		env[name] = sv
	}
	return env
}

// convertString converts a primitive cty value (string, number, bool) to a string.
func convertString(v cty.Value) (string, error) {
	if v.IsNull() || !v.IsKnown() {
		return "", fmt.Errorf("null or unknown")
	}
	sv, err := convert.Convert(v, cty.String)
	if err != nil {
		return "", err
	}
	return sv.AsString(), nil
}

// ParseSignal accepts signal names with or without the SIG prefix, in any case
// ("SIGHUP", "hup"); numbers are refused. It is hook.ParseSignal, the one parser the
// signal hook itself uses.
func ParseSignal(name string) (syscall.Signal, error) {
	return hook.ParseSignal(name)
}
