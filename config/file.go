package config

import (
	"github.com/hashicorp/hcl/v2"
)

// The file-shaped structs: what the HCL says, before defaults and checks. Blocks whose
// schema depends on a label (instance, credentials, sink, hook) are decoded in two steps:
// first the labels and the remaining body, then the body with the schema of that type.

type fileRoot struct {
	Agents      []fileAgent     `hcl:"agent,block"`
	Credentials []fileLabelled2 `hcl:"credentials,block"`
	Instances   []fileLabelled2 `hcl:"instance,block"`
}

type fileAgent struct {
	LogLevel  string `hcl:"log_level,optional"`
	LogFormat string `hcl:"log_format,optional"`
	Listen    string `hcl:"listen,optional"`
	APIRate   string `hcl:"api_rate,optional"`
	ShareKeys bool   `hcl:"share_keys,optional"`

	LogLevelRange  hcl.Range `hcl:"log_level,attr_value_range"`
	LogFormatRange hcl.Range `hcl:"log_format,attr_value_range"`
	ListenRange    hcl.Range `hcl:"listen,attr_value_range"`
	APIRateRange   hcl.Range `hcl:"api_rate,attr_value_range"`
	DefRange       hcl.Range `hcl:",def_range"`
}

// fileLabelled2 is a block with a type and a name label: `instance "cloudsql" "orders"`.
type fileLabelled2 struct {
	Type      string    `hcl:"type,label"`
	Name      string    `hcl:"name,label"`
	TypeRange hcl.Range `hcl:"type,label_range"`
	NameRange hcl.Range `hcl:"name,label_range"`
	DefRange  hcl.Range `hcl:",def_range"`
	Body      hcl.Body  `hcl:",remain"`
}

// fileLabelled1 is a block with a type label only: `sink "file"`, `hook "exec"`.
type fileLabelled1 struct {
	Type      string    `hcl:"type,label"`
	TypeRange hcl.Range `hcl:"type,label_range"`
	DefRange  hcl.Range `hcl:",def_range"`
	Body      hcl.Body  `hcl:",remain"`
}

type fileGoogleCredentials struct {
	CredentialsFile           string `hcl:"credentials_file,optional"`
	ImpersonateServiceAccount string `hcl:"impersonate_service_account,optional"`
	TokenFile                 string `hcl:"token_file,optional"`
	QuotaProject              string `hcl:"quota_project,optional"`

	CredentialsFileRange hcl.Range `hcl:"credentials_file,attr_value_range"`
	TokenFileRange       hcl.Range `hcl:"token_file,attr_value_range"`
	ImpersonateRange     hcl.Range `hcl:"impersonate_service_account,attr_value_range"`
}

// fileInstanceCommon are the attributes and blocks every instance type has. A type's
// own struct (fileCloudSQL, ...) holds the rest; load checks the union of both schemas
// first, so unknown names are reported once with suggestions from all valid names.
type fileInstanceCommon struct {
	RenewBefore string           `hcl:"renew_before,optional"`
	KeyRotation string           `hcl:"key_rotation,optional"`
	Schedule    string           `hcl:"schedule,optional"`
	Sinks       []fileLabelled1  `hcl:"sink,block"`
	Hooks       []fileLabelled1  `hcl:"hook,block"`
	Connections []fileConnection `hcl:"connection,block"` // at most one

	RenewBeforeRange hcl.Range `hcl:"renew_before,attr_value_range"`
	KeyRotationRange hcl.Range `hcl:"key_rotation,attr_value_range"`
	ScheduleRange    hcl.Range `hcl:"schedule,attr_value_range"`

	Remain hcl.Body `hcl:",remain"` // the type-specific part, decoded separately
}

type fileCloudSQL struct {
	Project     string `hcl:"project"`
	Instance    string `hcl:"instance"`
	Credentials string `hcl:"credentials,optional"`
	IAMAuthn    bool   `hcl:"iam_authn,optional"`
	APIEndpoint string `hcl:"api_endpoint,optional"`
	APIVersion  string `hcl:"api_version,optional"`
	IPType      string `hcl:"ip_type,optional"`

	IPTypeRange      hcl.Range `hcl:"ip_type,attr_value_range"`
	ProjectRange     hcl.Range `hcl:"project,attr_value_range"`
	InstanceRange    hcl.Range `hcl:"instance,attr_value_range"`
	CredentialsRange hcl.Range `hcl:"credentials,attr_value_range"`
	IAMAuthnRange    hcl.Range `hcl:"iam_authn,attr_value_range"`
	APIEndpointRange hcl.Range `hcl:"api_endpoint,attr_value_range"`
	APIVersionRange  hcl.Range `hcl:"api_version,attr_value_range"`

	Remain hcl.Body `hcl:",remain"` // the common part, decoded separately
}

type fileAlloyDB struct {
	Project      string `hcl:"project"`
	Location     string `hcl:"location"`
	Cluster      string `hcl:"cluster"`
	Credentials  string `hcl:"credentials,optional"`
	CertDuration string `hcl:"cert_duration,optional"`
	APIEndpoint  string `hcl:"api_endpoint,optional"`
	APIVersion   string `hcl:"api_version,optional"`

	ProjectRange      hcl.Range `hcl:"project,attr_value_range"`
	LocationRange     hcl.Range `hcl:"location,attr_value_range"`
	ClusterRange      hcl.Range `hcl:"cluster,attr_value_range"`
	CredentialsRange  hcl.Range `hcl:"credentials,attr_value_range"`
	CertDurationRange hcl.Range `hcl:"cert_duration,attr_value_range"`
	APIEndpointRange  hcl.Range `hcl:"api_endpoint,attr_value_range"`
	APIVersionRange   hcl.Range `hcl:"api_version,attr_value_range"`

	Remain hcl.Body `hcl:",remain"` // the common part, decoded separately
}

type fileHuaweiCredentials struct {
	Region        string         `hcl:"region,optional"`
	RegionRange   hcl.Range      `hcl:"region,attr_value_range"`
	IAMEndpoint   string         `hcl:"iam_endpoint,optional"`
	TokenFile     string         `hcl:"token_file,optional"`
	UserName      string         `hcl:"user_name,optional"`
	PasswordFile  string         `hcl:"password_file,optional"`
	Password      hcl.Expression `hcl:"password,optional"` // only env("NAME")
	DomainName    string         `hcl:"domain_name,optional"`
	ProjectID     string         `hcl:"project_id,optional"`
	AccessKey     string         `hcl:"access_key,optional"`
	SecretKeyFile string         `hcl:"secret_key_file,optional"`
	SecretKey     hcl.Expression `hcl:"secret_key,optional"` // only env("NAME")

	IAMEndpointRange hcl.Range `hcl:"iam_endpoint,attr_value_range"`
	PasswordRange    hcl.Range `hcl:"password,attr_range"`
	SecretKeyRange   hcl.Range `hcl:"secret_key,attr_range"`
}

type fileGeminiDB struct {
	ProjectID   string `hcl:"project_id"`
	InstanceID  string `hcl:"instance_id"`
	Credentials string `hcl:"credentials,optional"`
	APIEndpoint string `hcl:"api_endpoint,optional"`

	ProjectIDRange   hcl.Range `hcl:"project_id,attr_value_range"`
	InstanceIDRange  hcl.Range `hcl:"instance_id,attr_value_range"`
	CredentialsRange hcl.Range `hcl:"credentials,attr_value_range"`
	APIEndpointRange hcl.Range `hcl:"api_endpoint,attr_value_range"`

	Remain hcl.Body `hcl:",remain"` // the common part, decoded separately
}

type fileFileSink struct {
	Dir    string `hcl:"dir"`
	Layout string `hcl:"layout,optional"`
	Owner  string `hcl:"owner,optional"`
	Group  string `hcl:"group,optional"`
	Mode   string `hcl:"mode,optional"`
	Token  bool   `hcl:"token,optional"`
	PGPass bool   `hcl:"pgpass,optional"`
	User   string `hcl:"user,optional"`

	PKCS12 []filePKCS12 `hcl:"pkcs12,block"` // at most one

	TokenRange  hcl.Range `hcl:"token,attr_value_range"`
	PGPassRange hcl.Range `hcl:"pgpass,attr_value_range"`
	UserRange   hcl.Range `hcl:"user,attr_value_range"`
	DirRange    hcl.Range `hcl:"dir,attr_value_range"`
	LayoutRange hcl.Range `hcl:"layout,attr_value_range"`
	OwnerRange  hcl.Range `hcl:"owner,attr_value_range"`
	GroupRange  hcl.Range `hcl:"group,attr_value_range"`
	ModeRange   hcl.Range `hcl:"mode,attr_value_range"`
}

type fileExecHook struct {
	Command []string       `hcl:"command"`
	Timeout string         `hcl:"timeout,optional"`
	Env     hcl.Expression `hcl:"env,optional"` // an object of NAME = "value"

	CommandRange hcl.Range `hcl:"command,attr_value_range"`
	TimeoutRange hcl.Range `hcl:"timeout,attr_value_range"`
	EnvRange     hcl.Range `hcl:"env,attr_value_range"`
}

// fileConnection is an instance's `connection {}` block (spec §7).
type fileConnection struct {
	User     string `hcl:"user,optional"`
	DBName   string `hcl:"dbname,optional"`
	IPType   string `hcl:"ip_type,optional"`
	Host     string `hcl:"host,optional"`
	Port     int    `hcl:"port,optional"`
	Instance string `hcl:"instance,optional"`

	UserRange     hcl.Range `hcl:"user,attr_value_range"`
	DBNameRange   hcl.Range `hcl:"dbname,attr_value_range"`
	IPTypeRange   hcl.Range `hcl:"ip_type,attr_value_range"`
	HostRange     hcl.Range `hcl:"host,attr_value_range"`
	PortRange     hcl.Range `hcl:"port,attr_value_range"`
	InstanceRange hcl.Range `hcl:"instance,attr_value_range"`
	DefRange      hcl.Range `hcl:",def_range"`
}

// filePKCS12 is a file sink's `pkcs12 {}` block.
type filePKCS12 struct {
	PasswordFile string         `hcl:"password_file,optional"`
	Password     hcl.Expression `hcl:"password,optional"` // only env("NAME")

	PasswordFileRange hcl.Range `hcl:"password_file,attr_value_range"`
	PasswordRange     hcl.Range `hcl:"password,attr_range"`
	DefRange          hcl.Range `hcl:",def_range"`
}

type fileSignalHook struct {
	PIDFile string `hcl:"pid_file"`
	Signal  string `hcl:"signal,optional"`

	PIDFileRange hcl.Range `hcl:"pid_file,attr_value_range"`
	SignalRange  hcl.Range `hcl:"signal,attr_value_range"`
}

// or returns r, or def when r is the zero Range (the attribute was not set).
func or(r, def hcl.Range) hcl.Range {
	if r.Filename == "" {
		return def
	}
	return r
}
