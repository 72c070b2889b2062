package sinks

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// This file formats the connection files of spec §7 (pg_service.conf, connection.env,
// my.cnf). The functions are pure: they take connParams and return the file's bytes, or
// an error naming the value that cannot be written safely in that format.

// Default ports of the engines.
const (
	defaultPostgresPort = 5432
	defaultMySQLPort    = 3306
)

// engineKind is the client family of a database engine.
type engineKind int

const (
	engineNone     engineKind = iota // SQL Server, unknown: no connection files
	enginePostgres                   // Cloud SQL POSTGRES_*, AlloyDB POSTGRES
	engineMySQL                      // Cloud SQL MYSQL_*
)

// engineOf classifies an engine name as the APIs give it.
func engineOf(engine string) engineKind {
	switch {
	case strings.HasPrefix(engine, "POSTGRES"):
		return enginePostgres
	case strings.HasPrefix(engine, "MYSQL"):
		return engineMySQL
	}
	return engineNone
}

// connParams are the values of an instance's connection files.
type connParams struct {
	Service string // pg_service.conf section: the instance name
	Host    string
	Port    int // > 0
	User    string
	DBName  string // "" leaves the database out
	Cert    string // absolute visible path of the client certificate
	Key     string // absolute visible path of the PEM private key
	KeyDER  string // absolute visible path of the PKCS#8 DER key (pgjdbc)
	CA      string // absolute visible path of the server CA file
}

// errUnsafe is wrapped by every "cannot be written safely" error.
var errUnsafe = errors.New("cannot be written safely")

// checkPlain refuses what no format here can carry: empty values where one is needed,
// line breaks and NULs.
func checkPlain(what, v string) error {
	if strings.ContainsAny(v, "\n\r\x00") {
		return fmt.Errorf("connection %s %q %w (it holds a line break or NUL)", what, v, errUnsafe)
	}
	return nil
}

// pgServiceValue checks a pg_service.conf value. libpq takes everything after the first
// '=' literally (no quoting, no escapes) and strips trailing whitespace from the line,
// so a value must not start or end with whitespace.
func pgServiceValue(what, v string) (string, error) {
	if err := checkPlain(what, v); err != nil {
		return "", err
	}
	if v != strings.TrimSpace(v) {
		return "", fmt.Errorf("connection %s %q %w in pg_service.conf (leading or trailing whitespace)", what, v, errUnsafe)
	}
	return v, nil
}

// formatPGService returns pg_service.conf with one section named p.Service.
func formatPGService(p connParams) ([]byte, error) {
	if p.Service == "" || strings.ContainsAny(p.Service, "[]") || p.Service != strings.TrimSpace(p.Service) {
		return nil, fmt.Errorf("connection service name %q %w in pg_service.conf", p.Service, errUnsafe)
	}
	if err := checkPlain("service name", p.Service); err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("# Written by dbcert-agent; switches with the certificate. Use: PGSERVICEFILE=<this file> psql service=" + p.Service + "\n")
	b.WriteString("[" + p.Service + "]\n")
	for _, kv := range pgParams(p) {
		v, err := pgServiceValue(kv[0], kv[1])
		if err != nil {
			return nil, err
		}
		b.WriteString(kv[0] + "=" + v + "\n")
	}
	return []byte(b.String()), nil
}

// pgParams are the libpq connection parameters in a fixed order; empty optional ones
// (dbname, user) are left out.
func pgParams(p connParams) [][2]string {
	out := [][2]string{{"host", p.Host}, {"port", strconv.Itoa(p.Port)}}
	if p.DBName != "" {
		out = append(out, [2]string{"dbname", p.DBName})
	}
	if p.User != "" {
		out = append(out, [2]string{"user", p.User})
	}
	return append(out,
		[2]string{"sslmode", "verify-ca"},
		[2]string{"sslcert", p.Cert},
		[2]string{"sslkey", p.Key},
		[2]string{"sslrootcert", p.CA})
}

// envQuote quotes a value for a line NAME='value' that both systemd's EnvironmentFile=
// and a POSIX shell (`set -a; . file`) read as the same literal string: single quotes,
// inside which neither expands anything. A value holding a single quote is refused (the
// two parsers do not share a way to escape it inside single quotes).
func envQuote(name, v string) (string, error) {
	if err := checkPlain(name, v); err != nil {
		return "", err
	}
	if strings.Contains(v, "'") {
		return "", fmt.Errorf("connection value %s %q %w in connection.env (it holds a single quote)", name, v, errUnsafe)
	}
	return "'" + v + "'", nil
}

// formatEnv renders NAME='value' lines.
func formatEnv(vars [][2]string) ([]byte, error) {
	var b strings.Builder
	b.WriteString("# Written by dbcert-agent; switches with the certificate. For systemd EnvironmentFile= or `set -a; . <this file>`.\n")
	for _, kv := range vars {
		q, err := envQuote(kv[0], kv[1])
		if err != nil {
			return nil, err
		}
		b.WriteString(kv[0] + "=" + q + "\n")
	}
	return []byte(b.String()), nil
}

// formatPGEnv returns connection.env for PostgreSQL: the libpq variables, DATABASE_URL
// and JDBC_URL.
func formatPGEnv(p connParams) ([]byte, error) {
	vars := [][2]string{{"PGHOST", p.Host}, {"PGPORT", strconv.Itoa(p.Port)}}
	if p.DBName != "" {
		vars = append(vars, [2]string{"PGDATABASE", p.DBName})
	}
	if p.User != "" {
		vars = append(vars, [2]string{"PGUSER", p.User})
	}
	vars = append(vars,
		[2]string{"PGSSLMODE", "verify-ca"},
		[2]string{"PGSSLCERT", p.Cert},
		[2]string{"PGSSLKEY", p.Key},
		[2]string{"PGSSLROOTCERT", p.CA},
		[2]string{"DATABASE_URL", postgresURI(p)},
		[2]string{"JDBC_URL", jdbcURL(p)})
	return formatEnv(vars)
}

// formatMySQLEnv returns connection.env for MySQL (the variables the mysql client reads).
func formatMySQLEnv(p connParams) ([]byte, error) {
	return formatEnv([][2]string{{"MYSQL_HOST", p.Host}, {"MYSQL_TCP_PORT", strconv.Itoa(p.Port)}})
}

// pctEncode percent-encodes every byte but RFC 3986 unreserved characters (and '/'
// when keepSlash). Spaces become %20, never '+': libpq decodes only %XX, and pgjdbc's
// URLDecoder would turn '+' into a space.
func pctEncode(s string, keepSlash bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', keepSlash && c == '/':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// uriHost is the host part of a URI: IPv6 literals in brackets, names percent-encoded.
func uriHost(h string) string {
	if ip := net.ParseIP(h); ip != nil && ip.To4() == nil {
		return "[" + h + "]"
	}
	return pctEncode(h, false)
}

// query joins encoded key=value pairs with '&'.
func query(kvs [][2]string) string {
	parts := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		parts = append(parts, kv[0]+"="+pctEncode(kv[1], true))
	}
	return strings.Join(parts, "&")
}

// postgresURI is the libpq URI: postgresql://user@host:port/dbname?sslmode=...
func postgresURI(p connParams) string {
	var b strings.Builder
	b.WriteString("postgresql://")
	if p.User != "" {
		b.WriteString(pctEncode(p.User, false) + "@")
	}
	b.WriteString(uriHost(p.Host) + ":" + strconv.Itoa(p.Port) + "/")
	b.WriteString(pctEncode(p.DBName, false))
	b.WriteString("?" + query([][2]string{
		{"sslmode", "verify-ca"}, {"sslcert", p.Cert}, {"sslkey", p.Key}, {"sslrootcert", p.CA}}))
	return b.String()
}

// jdbcURL is pgjdbc's URL, with the DER key (pgjdbc reads PKCS#8 DER, not PEM).
func jdbcURL(p connParams) string {
	var b strings.Builder
	b.WriteString("jdbc:postgresql://" + uriHost(p.Host) + ":" + strconv.Itoa(p.Port) + "/")
	b.WriteString(pctEncode(p.DBName, false))
	var q [][2]string
	if p.User != "" {
		q = append(q, [2]string{"user", p.User})
	}
	q = append(q, [2]string{"sslmode", "verify-ca"}, [2]string{"sslcert", p.Cert},
		[2]string{"sslkey", p.KeyDER}, [2]string{"sslrootcert", p.CA})
	b.WriteString("?" + query(q))
	return b.String()
}

// myCnfValue quotes an option-file value the way both MySQL's and MariaDB's option
// parsers read back literally: in double quotes (so '#' and spaces survive), with
// backslashes doubled (both parsers turn "\\" into "\"; a lone "\" before n, t, s, ...
// would become a control character). Neither parser has an escape for a double quote
// inside double quotes (`a"b#c` reads back as `"a"b`), so a value with one is refused.
func myCnfValue(what, v string) (string, error) {
	if err := checkPlain(what, v); err != nil {
		return "", err
	}
	if strings.Contains(v, `"`) {
		return "", fmt.Errorf("connection %s %q %w in my.cnf (it holds a double quote, which option files cannot escape)", what, v, errUnsafe)
	}
	return `"` + strings.ReplaceAll(v, `\`, `\\`) + `"`, nil
}

// formatMyCnf returns my.cnf with a [client] group of options both the MySQL and the
// MariaDB clients accept.
func formatMyCnf(p connParams) ([]byte, error) {
	opts := [][2]string{{"host", p.Host}, {"port", strconv.Itoa(p.Port)}}
	if p.User != "" {
		opts = append(opts, [2]string{"user", p.User})
	}
	if p.DBName != "" {
		opts = append(opts, [2]string{"database", p.DBName})
	}
	opts = append(opts, [2]string{"ssl-ca", p.CA}, [2]string{"ssl-cert", p.Cert}, [2]string{"ssl-key", p.Key})
	var b strings.Builder
	b.WriteString("# Written by dbcert-agent; switches with the certificate. Use: mysql --defaults-extra-file=<this file>\n")
	b.WriteString("[client]\n")
	for _, kv := range opts {
		v, err := myCnfValue(kv[0], kv[1])
		if err != nil {
			return nil, err
		}
		b.WriteString(kv[0] + "=" + v + "\n")
	}
	return []byte(b.String()), nil
}
