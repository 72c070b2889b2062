package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/dbcert-agent/dbcert-agent/agent/alloydb"
	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/cloudsql"
	"github.com/dbcert-agent/dbcert-agent/agent/gcpauth"
	"github.com/dbcert-agent/dbcert-agent/agent/geminidb"
	"github.com/dbcert-agent/dbcert-agent/agent/hook"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
	"github.com/dbcert-agent/dbcert-agent/config"
	"github.com/dbcert-agent/dbcert-agent/sinks"
)

// scopeCloudPlatform is accepted by every admin API we call (Cloud SQL also accepts
// sqlservice.admin, AlloyDB only this one), so one token per credentials block serves all.
const scopeCloudPlatform = "https://www.googleapis.com/auth/cloud-platform"

// New builds an Agent from a validated configuration. Sinks and hooks that cannot be
// built are configuration errors (returned); credentials that cannot be loaded fail only
// the instances that use them (Instance.Err), so one broken credentials block does not
// stop the others.
func New(ctx context.Context, cfg *config.Config, o Options) (*Agent, error) {
	instances, err := Build(ctx, cfg, BuildOptions{Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	return NewWithInstances(instances, o), nil
}

// BuildOptions tune Build. Zero values are defaults.
type BuildOptions struct {
	Logger    *slog.Logger      // receives hook output; default slog.Default()
	Transport http.RoundTripper // base transport of API clients (e.g. Metrics.Transport); default gcpauth.DefaultTransport()
}

// Build makes the runtime instances of a configuration (see New).
func Build(ctx context.Context, cfg *config.Config, o BuildOptions) ([]*Instance, error) {
	tr := o.Transport
	if tr == nil {
		tr = gcpauth.DefaultTransport()
	}
	// Every API call is counted for the pacer (see callCount).
	b := &builder{ctx: ctx, log: o.Logger, transport: callTransport{tr}, clients: map[*config.GoogleCredentials]clientOrErr{},
		logins: map[*config.GoogleCredentials]oauth2.TokenSource{},
		huawei: map[*config.HuaweiCredentials]clientOrErr{}}
	if b.log == nil {
		b.log = slog.Default()
	}
	instances := make([]*Instance, 0, len(cfg.Instances))
	for _, ci := range cfg.Instances {
		in, err := b.instance(ci)
		if err != nil {
			return nil, fmt.Errorf("instance %q: %w", ci.Name, err)
		}
		instances = append(instances, in)
	}
	return instances, nil
}

type clientOrErr struct {
	c   *http.Client
	err error
}

// builder turns config instances into runtime ones, sharing one HTTP client per
// credentials block.
type builder struct {
	ctx       context.Context
	log       *slog.Logger
	transport http.RoundTripper
	clients   map[*config.GoogleCredentials]clientOrErr
	logins    map[*config.GoogleCredentials]oauth2.TokenSource
	huawei    map[*config.HuaweiCredentials]clientOrErr
}

func (b *builder) instance(ci *config.Instance) (*Instance, error) {
	in := &Instance{Name: ci.Name, Renewal: ci.Renewal, Spec: ci, NeedsKey: ci.IssuesClientCert()}
	for i, cs := range ci.Sinks {
		s, err := OpenFileSink(ci, cs)
		if err != nil {
			return nil, err
		}
		in.Sinks = append(in.Sinks, s)
		if i == 0 {
			p := s.Paths()
			in.Event = hook.Event{Dir: s.Dir(), CAFile: p.CA}
			if in.NeedsKey { // CA-only instances have no certificate or key file
				in.Event.CertFile, in.Event.KeyFile = p.Cert, p.Key
			}
		}
	}
	for _, ch := range ci.Hooks {
		h, err := newHook(ch, b.log) // its records name the event's instance themselves
		if err != nil {
			return nil, err
		}
		in.Hooks = append(in.Hooks, h)
	}
	switch ci.Type {
	case config.TypeCloudSQL:
		c := ci.CloudSQL
		client, err := b.googleClient(c.Credentials)
		if err != nil {
			in.Err = err
			return in, nil
		}
		opts := cloudsql.Options{
			Project: c.Project, Instance: c.Instance,
			Endpoint: c.APIEndpoint, APIVersion: c.APIVersion,
			HTTPClient: client,
		}
		opts.EmbedLoginToken, opts.IPType = c.IAMAuthn, c.IPType
		wantToken, wantPGPass := false, false
		for _, cs := range ci.Sinks {
			wantToken = wantToken || cs.Token || cs.PGPassUser != ""
			wantPGPass = wantPGPass || cs.PGPassUser != ""
		}
		opts.NeedHost = wantPGPass
		if cn := ci.Connection; cn != nil {
			// Connection files need the API's address unless the block names a host.
			opts.Connection, opts.IPType = true, cn.IPType
			opts.NeedHost = opts.NeedHost || cn.Host == ""
		}
		opts.Logger = b.log.With("instance", ci.Name)
		if c.IAMAuthn || wantToken {
			if opts.LoginToken, err = b.loginTokens(c.Credentials); err != nil {
				in.Err = err
				return in, nil
			}
		}
		p, err := cloudsql.New(opts)
		if err != nil {
			return nil, err
		}
		in.Provider = p
		in.Credentials, in.APICalls = "google:"+c.Credentials.Name, 2 // connectSettings + generateEphemeralCert
	case config.TypeAlloyDB:
		c := ci.AlloyDB
		client, err := b.googleClient(c.Credentials)
		if err != nil {
			in.Err = err
			return in, nil
		}
		in.Credentials, in.APICalls = "google:"+c.Credentials.Name, 1
		ao := alloydb.Options{
			Project: c.Project, Location: c.Location, Cluster: c.Cluster,
			Endpoint: c.APIEndpoint, APIVersion: c.APIVersion, CertDuration: c.CertDuration,
			HTTPClient: client,
		}
		if cn := ci.Connection; cn != nil && cn.Instance != "" {
			ao.Instance, ao.IPType, ao.NeedHost = cn.Instance, cn.IPType, cn.Host == ""
			in.APICalls++ // instances.connectionInfo
		}
		p, err := alloydb.New(ao)
		if err != nil {
			return nil, err
		}
		in.Provider = p
	case config.TypeGeminiDB:
		c := ci.GeminiDB
		client, err := b.huaweiClient(c.Credentials)
		if err != nil {
			in.Err = err
			return in, nil
		}
		in.Credentials, in.APICalls = "huaweicloud:"+c.Credentials.Name, 1
		p, err := geminidb.New(geminidb.Options{
			ProjectID: c.ProjectID, InstanceID: c.InstanceID,
			Endpoint: c.APIEndpoint, Region: c.Credentials.Region, HTTPClient: client,
		})
		if err != nil {
			return nil, err
		}
		in.Provider = p
	default:
		return nil, fmt.Errorf("instance type %q is not supported", ci.Type)
	}
	return in, nil
}

// huaweiClient returns the authenticated HTTP client of a huaweicloud credentials
// block, made once.
func (b *builder) huaweiClient(hc *config.HuaweiCredentials) (*http.Client, error) {
	if c, ok := b.huawei[hc]; ok {
		return c.c, c.err
	}
	tr, err := huaweiauth.NewTransport(huaweiauth.Options{
		Region: hc.Region, IAMEndpoint: hc.IAMEndpoint, TokenFile: hc.TokenFile,
		UserName: hc.UserName, PasswordFile: hc.PasswordFile, Password: hc.Password.Reveal(), DomainName: hc.DomainName,
		ProjectID: hc.ProjectID, AccessKey: hc.AccessKey, SecretKeyFile: hc.SecretKeyFile, SecretKey: hc.SecretKey.Reveal(),
		Base: b.transport,
	})
	var c *http.Client
	if err != nil {
		err = fmt.Errorf("credentials \"huaweicloud\" %q: %w", hc.Name, err)
	} else {
		c = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	b.huawei[hc] = clientOrErr{c, err}
	return c, err
}

// OpenFileSink makes the sink of a `sink "file"` block of instance ci: its pkcs12 block
// and the instance's connection block become sink options.
func OpenFileSink(ci *config.Instance, cs config.FileSink) (*sinks.File, error) {
	o := sinks.FileOptions{Dir: cs.Dir, Layout: cs.Layout, UID: cs.UID, GID: cs.GID,
		KeyMode: cs.KeyMode, Token: cs.Token, PGPassUser: cs.PGPassUser}
	if p := cs.PKCS12; p != nil {
		o.PKCS12 = &sinks.PKCS12Options{PasswordFile: p.PasswordFile, Password: bundle.Secret(p.Password.Reveal())}
	}
	if c := ci.Connection; c != nil {
		o.Connection = &sinks.Connection{Service: ci.Name, User: c.User, DBName: c.DBName, Host: c.Host, Port: c.Port}
	}
	return sinks.NewFile(o)
}

func newHook(ch config.Hook, log *slog.Logger) (Hook, error) {
	switch ch.Kind {
	case config.HookExec:
		return hook.NewExec(hook.ExecOptions{Command: ch.Exec.Command, Timeout: ch.Exec.Timeout, Env: ch.Exec.Env, Logger: log})
	case config.HookSignal:
		return hook.NewSignal(hook.SignalOptions{PIDFile: ch.Signal.PIDFile, Signal: ch.Signal.Signal})
	}
	return nil, fmt.Errorf("hook type %q is not supported", ch.Kind)
}

// loginTokenEarly is how much life a login token must have left to go into a
// certificate (iam_authn): the certificate lives no longer than the token.
const loginTokenEarly = 5 * time.Minute

// scopeSQLLogin is the scope of tokens embedded in certificates for IAM database
// authentication; never the admin token's scope.
const scopeSQLLogin = "https://www.googleapis.com/auth/sqlservice.login"

// loginTokens returns the sqlservice.login token source of a credentials block, made
// once.
func (b *builder) loginTokens(gc *config.GoogleCredentials) (oauth2.TokenSource, error) {
	if ts, ok := b.logins[gc]; ok {
		return ts, nil
	}
	ts, err := gcpauth.TokenSource(b.ctx, gcpauth.Options{
		CredentialsFile:           gc.CredentialsFile,
		ImpersonateServiceAccount: gc.ImpersonateServiceAccount,
		Scopes:                    []string{scopeSQLLogin},
		Base:                      b.transport,
		EarlyRefresh:              loginTokenEarly,
	})
	if err != nil {
		return nil, fmt.Errorf("%s (sqlservice.login tokens for iam_authn): %w", credName(gc), err)
	}
	b.logins[gc] = ts
	return ts, nil
}

func credName(gc *config.GoogleCredentials) string {
	if gc.Name == "" {
		return "Application Default Credentials"
	}
	return fmt.Sprintf("credentials \"google\" %q", gc.Name)
}

// googleClient returns the HTTP client for a credentials block, made once.
func (b *builder) googleClient(gc *config.GoogleCredentials) (*http.Client, error) {
	if c, ok := b.clients[gc]; ok {
		return c.c, c.err
	}
	c, err := gcpauth.NewClient(b.ctx, gcpauth.Options{
		CredentialsFile:           gc.CredentialsFile,
		ImpersonateServiceAccount: gc.ImpersonateServiceAccount,
		TokenFile:                 gc.TokenFile,
		QuotaProject:              gc.QuotaProject,
		Scopes:                    []string{scopeCloudPlatform},
		Base:                      b.transport,
	})
	if err != nil {
		err = fmt.Errorf("%s: %w", credName(gc), err)
	}
	b.clients[gc] = clientOrErr{c, err}
	return c, err
}
