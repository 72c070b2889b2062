// Package verify connects to a database with the files dbcert-agent wrote, the way a
// client would, and reports whether the TLS session works: the protocol version, the
// server certificate, whether its chain verifies against the CA file, whether its
// identity matches the instance, and whether the server accepted the client certificate.
//
// It speaks just enough of each wire protocol to reach the point where the server has
// judged the client certificate: PostgreSQL (SSLRequest, TLS, startup message, the first
// reply) and MySQL/MariaDB (server greeting, SSL request packet, TLS, handshake response,
// the first reply). It never sends a password and never runs a query.
package verify

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Outcome is what the server did with the client certificate.
type Outcome struct {
	// Accepted is true when the server went past the client certificate: PostgreSQL
	// answered the startup message with an authentication request or AuthenticationOk
	// (or an error that does not name the certificate), MySQL answered the handshake
	// response with anything but a TLS alert.
	Accepted bool
	// Detail is the server's own words when it answered with an error ("" otherwise).
	Detail string
}

// ErrRejected is wrapped by the errors that mean the server refused the client
// certificate (a TLS alert, or an error response naming the certificate).
var ErrRejected = errors.New("the server rejected the client certificate")

// pgSSLRequestCode is the PostgreSQL SSLRequest code, 1234<<16 | 5679.
const pgSSLRequestCode = 80877103

// Postgres runs the PostgreSQL side of a check on an open connection c: SSLRequest, the
// TLS handshake with cfg, a protocol 3.0 startup message for user and database (empty:
// the server's default, the user name), and reads the first reply. It returns the TLS
// state once the handshake is done (even when the server then rejects the client
// certificate) and the outcome. c is not closed.
func Postgres(ctx context.Context, c net.Conn, cfg *tls.Config, user, database string) (*tls.ConnectionState, Outcome, error) {
	stopDeadline := watchContext(ctx, c)
	defer stopDeadline()
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], pgSSLRequestCode)
	if _, err := c.Write(req[:]); err != nil {
		return nil, Outcome{}, fmt.Errorf("sending SSLRequest: %w", err)
	}
	var resp [1]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		return nil, Outcome{}, fmt.Errorf("reading the answer to SSLRequest: %w", err)
	}
	if resp[0] != 'S' {
		return nil, Outcome{}, fmt.Errorf("the server does not offer TLS (answered %q to SSLRequest)", resp[0])
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, Outcome{}, handshakeError(err)
	}
	st := tc.ConnectionState()

	var msg []byte
	msg = binary.BigEndian.AppendUint32(msg, 0) // length, filled in below
	msg = binary.BigEndian.AppendUint32(msg, 3<<16)
	if user == "" {
		user = "postgres"
	}
	for _, kv := range [][2]string{{"user", user}, {"database", database}, {"application_name", "dbcert-agent verify"}} {
		if kv[1] == "" {
			continue
		}
		msg = append(append(append(append(msg, kv[0]...), 0), kv[1]...), 0)
	}
	msg = append(msg, 0)
	binary.BigEndian.PutUint32(msg[0:4], uint32(len(msg)))
	if _, err := tc.Write(msg); err != nil {
		return &st, Outcome{}, tlsAlertError("sending the startup message", err)
	}
	r := bufio.NewReader(tc)
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return &st, Outcome{}, tlsAlertError("reading the reply to the startup message", err)
	}
	n := int(binary.BigEndian.Uint32(hdr[1:5])) - 4
	if n < 0 || n > 1<<16 {
		return &st, Outcome{}, fmt.Errorf("the server sent a malformed reply (type %q, length %d)", hdr[0], n+4)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return &st, Outcome{}, tlsAlertError("reading the reply to the startup message", err)
	}
	switch hdr[0] {
	case 'R': // AuthenticationOk (0) or a request for more authentication
		if n >= 4 && binary.BigEndian.Uint32(body) == 0 {
			_, _ = tc.Write([]byte{'X', 0, 0, 0, 4}) // Terminate
		}
		return &st, Outcome{Accepted: true}, nil
	case 'E':
		detail := pgErrorMessage(body)
		if namesCertificate(detail) {
			return &st, Outcome{Detail: detail}, fmt.Errorf("%w: %s", ErrRejected, detail)
		}
		return &st, Outcome{Accepted: true, Detail: detail}, nil
	default:
		return &st, Outcome{}, fmt.Errorf("the server answered the startup message with an unexpected message type %q", hdr[0])
	}
}

// pgErrorMessage extracts severity, code and message from an ErrorResponse body.
func pgErrorMessage(body []byte) string {
	var sev, code, msg string
	for len(body) > 0 && body[0] != 0 {
		t := body[0]
		end := 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		v := string(body[1:end])
		switch t {
		case 'S':
			sev = v
		case 'C':
			code = v
		case 'M':
			msg = v
		}
		if end >= len(body) {
			break
		}
		body = body[end+1:]
	}
	return strings.TrimSpace(fmt.Sprintf("%s %s: %s", sev, code, msg))
}

// namesCertificate reports whether a server error is about the client certificate
// ("connection requires a valid client certificate", "certificate authentication failed
// for user ..."), as opposed to, say, an unknown database or a pg_hba.conf rule for
// another user (whose text names "SSL encryption" but not the certificate).
func namesCertificate(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "certificate") || strings.Contains(s, "x509")
}

// MySQL protocol capability flags used by the SSL request and handshake response.
const (
	myClientLongPassword = 0x00000001
	myClientConnectDB    = 0x00000008
	myClientProtocol41   = 0x00000200
	myClientSSL          = 0x00000800
	myClientSecureConn   = 0x00008000
	myClientPluginAuth   = 0x00080000
	myCharsetUTF8MB4     = 45
)

// MySQL runs the MySQL/MariaDB side of a check on an open connection c: reads the server
// greeting, sends the SSL request packet, does the TLS handshake with cfg, sends a
// handshake response for user (and database, when set) with an empty
// mysql_native_password answer, and reads the first reply. The handshake completing and
// the server answering is acceptance of the client certificate; a TLS alert is a
// rejection. c is not closed.
func MySQL(ctx context.Context, c net.Conn, cfg *tls.Config, user, database string) (*tls.ConnectionState, Outcome, error) {
	stopDeadline := watchContext(ctx, c)
	defer stopDeadline()
	r := bufio.NewReader(c)
	seq, greet, err := readMyPacket(r)
	if err != nil {
		return nil, Outcome{}, fmt.Errorf("reading the server greeting: %w", err)
	}
	caps, err := parseGreeting(greet)
	if err != nil {
		return nil, Outcome{}, err
	}
	if caps&myClientSSL == 0 {
		return nil, Outcome{}, errors.New("the server does not offer TLS (no CLIENT_SSL in its greeting)")
	}
	flags := uint32(myClientLongPassword | myClientProtocol41 | myClientSSL | myClientSecureConn | myClientPluginAuth)
	if database != "" {
		flags |= myClientConnectDB
	}
	var sslReq []byte
	sslReq = binary.LittleEndian.AppendUint32(sslReq, flags)
	sslReq = binary.LittleEndian.AppendUint32(sslReq, 1<<24)
	sslReq = append(sslReq, myCharsetUTF8MB4)
	sslReq = append(sslReq, make([]byte, 23)...)
	seq++
	if err := writeMyPacket(c, seq, sslReq); err != nil {
		return nil, Outcome{}, fmt.Errorf("sending the SSL request: %w", err)
	}
	if r.Buffered() > 0 {
		return nil, Outcome{}, errors.New("the server sent data before the TLS handshake")
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, Outcome{}, handshakeError(err)
	}
	st := tc.ConnectionState()
	if err := awaitRejection(ctx, tc); err != nil {
		return &st, Outcome{}, err
	}

	if user == "" {
		user = "root"
	}
	resp := append([]byte(nil), sslReq...)
	resp = append(append(resp, user...), 0)
	resp = append(resp, 0) // empty auth response (length-prefixed)
	if database != "" {
		resp = append(append(resp, database...), 0)
	}
	resp = append(append(resp, "mysql_native_password"...), 0)
	seq++
	if err := writeMyPacket(tc, seq, resp); err != nil {
		return &st, Outcome{}, tlsAlertError("sending the handshake response", err)
	}
	_, reply, err := readMyPacket(bufio.NewReader(tc))
	if err != nil {
		return &st, Outcome{}, tlsAlertError("reading the reply to the handshake response", err)
	}
	if len(reply) > 0 && reply[0] == 0xff {
		detail := myErrorMessage(reply)
		return &st, Outcome{Accepted: true, Detail: detail}, nil
	}
	return &st, Outcome{Accepted: true}, nil
}

// rejectionWindow is how long awaitRejection listens for the server's verdict on the
// client certificate before the client speaks.
const rejectionWindow = 500 * time.Millisecond

// awaitRejection listens briefly after a TLS 1.3 handshake, where the server checks the
// client certificate only after the client's Finished: a server that refuses it sends an
// alert and closes, and a client that wrote first would see only "connection reset".
// A server that accepted the certificate says nothing (MySQL waits for the handshake
// response), so the read times out and the connection is used as before.
func awaitRejection(ctx context.Context, tc *tls.Conn) error {
	if tc.ConnectionState().Version < tls.VersionTLS13 {
		return nil // TLS 1.2 verifies the client certificate inside the handshake
	}
	until := time.Now().Add(rejectionWindow)
	if dl, ok := ctx.Deadline(); ok && dl.Before(until) {
		until = dl
	}
	if err := tc.SetReadDeadline(until); err != nil {
		return err
	}
	var one [1]byte
	n, err := tc.Read(one[:])
	var ne net.Error
	switch {
	case n > 0:
		return errors.New("the server sent data before the handshake response")
	case err != nil && !(errors.As(err, &ne) && ne.Timeout()):
		return tlsAlertError("after the TLS handshake", err)
	}
	var reset time.Time
	if dl, ok := ctx.Deadline(); ok {
		reset = dl
	}
	return tc.SetReadDeadline(reset)
}

func readMyPacket(r *bufio.Reader) (seq byte, payload []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[3], payload, nil
}

func writeMyPacket(w io.Writer, seq byte, payload []byte) error {
	n := len(payload)
	_, err := w.Write(append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...))
	return err
}

// parseGreeting returns the capability flags of a protocol-10 server greeting.
func parseGreeting(p []byte) (uint32, error) {
	if len(p) > 0 && p[0] == 0xff {
		return 0, fmt.Errorf("the server refused the connection: %s", myErrorMessage(p))
	}
	if len(p) == 0 || p[0] != 10 {
		return 0, errors.New("the server greeting is not MySQL protocol 10 (is this a MySQL server?)")
	}
	i := 1
	for i < len(p) && p[i] != 0 {
		i++
	}
	i++            // NUL after the server version
	i += 4 + 8 + 1 // connection id, auth data part 1, filler
	if i+2 > len(p) {
		return 0, errors.New("the server greeting is truncated")
	}
	caps := uint32(binary.LittleEndian.Uint16(p[i:]))
	i += 2 + 1 + 2 // lower caps, charset, status
	if i+2 <= len(p) {
		caps |= uint32(binary.LittleEndian.Uint16(p[i:])) << 16
	}
	return caps, nil
}

func myErrorMessage(p []byte) string {
	if len(p) < 3 {
		return "error"
	}
	code := binary.LittleEndian.Uint16(p[1:3])
	msg := p[3:]
	if len(msg) > 6 && msg[0] == '#' {
		msg = msg[6:]
	}
	return fmt.Sprintf("ERROR %d: %s", code, msg)
}

// handshakeError words a failed TLS handshake; an alert from the server about the
// client certificate wraps ErrRejected.
func handshakeError(err error) error {
	if isCertAlert(err) {
		return fmt.Errorf("TLS handshake: %w (%v)", ErrRejected, err)
	}
	return fmt.Errorf("TLS handshake: %w", err)
}

// tlsAlertError words an error after the handshake: with TLS 1.3 the server judges the
// client certificate after the client considers the handshake done, so its alert shows
// up on the first read or write.
func tlsAlertError(what string, err error) error {
	var alert tls.AlertError
	if isCertAlert(err) || errors.As(err, &alert) {
		return fmt.Errorf("%s: %w (%v)", what, ErrRejected, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: the server closed the connection (%v); it may have rejected the client certificate", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isCertAlert(err error) bool {
	s := err.Error()
	for _, a := range []string{"unknown certificate authority", "bad certificate", "certificate required",
		"certificate expired", "certificate revoked", "unsupported certificate", "certificate unknown", "access denied"} {
		if strings.Contains(s, "remote error: tls: "+a) {
			return true
		}
	}
	return false
}

// watchContext applies ctx's deadline to c, and a deadline in the past once ctx is
// cancelled, so blocked reads and writes return. The returned func stops watching.
func watchContext(ctx context.Context, c net.Conn) func() {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	return func() { stop() }
}

var aLongTimeAgo = time.Unix(1, 0)
