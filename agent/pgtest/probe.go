package pgtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// tlsView is what a TLS client sees of the server: the certificate it presents and the
// distinguished names of the CAs it asks client certificates from (those of ssl_ca_file).
type tlsView struct {
	leaf       []byte   // DER of the server's leaf certificate
	clientCAs  [][]byte // DER-encoded names from the CertificateRequest, sorted
	requestsCA bool     // whether the server asked for a client certificate at all
}

// probeTLS opens a connection, negotiates TLS the PostgreSQL way (SSLRequest, then the
// handshake) and reports what the server presents. It sends no client certificate and no
// startup packet; the server verifies nothing of this session, the harness only looks.
func probeTLS(ctx context.Context, addr string) (tlsView, error) {
	var v tlsView
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return v, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// SSLRequest: length 8, code 1234<<16 | 5679.
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], 80877103)
	if _, err := c.Write(req[:]); err != nil {
		return v, fmt.Errorf("SSLRequest: %w", err)
	}
	var resp [1]byte
	if _, err := c.Read(resp[:]); err != nil {
		return v, fmt.Errorf("SSLRequest response: %w", err)
	}
	if resp[0] != 'S' {
		return v, fmt.Errorf("server refused TLS (answered %q to SSLRequest)", resp[0])
	}
	tc := tls.Client(c, &tls.Config{
		// Only looking at what the server presents; nothing is trusted or sent.
		InsecureSkipVerify: true, //nolint:gosec // inspection probe, see above
		ServerName:         "localhost",
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			v.requestsCA = true
			v.clientCAs = slices.Clone(cri.AcceptableCAs)
			return &tls.Certificate{}, nil
		},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return v, fmt.Errorf("TLS handshake: %w", err)
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return v, errors.New("server presented no certificate")
	}
	v.leaf = st.PeerCertificates[0].Raw
	slices.SortFunc(v.clientCAs, bytes.Compare)
	// Orderly goodbye: close_notify, then wait for the server to hang up. The backend
	// sees a session that ended before its startup packet and logs nothing about it.
	if tc.CloseWrite() == nil {
		_, _ = io.Copy(io.Discard, tc)
	}
	return v, nil
}

// expectedView is what probeTLS should see once the server uses certPEM and clientCAPEM.
// ok is false when certPEM holds no parsable certificate (nothing to compare with).
func expectedView(certPEM, clientCAPEM []byte) (v tlsView, ok bool) {
	certs := pemCerts(certPEM)
	if len(certs) == 0 {
		return v, false
	}
	v.leaf = certs[0].Raw
	for _, c := range pemCerts(clientCAPEM) {
		if !slices.ContainsFunc(v.clientCAs, func(n []byte) bool { return bytes.Equal(n, c.RawSubject) }) {
			v.clientCAs = append(v.clientCAs, c.RawSubject)
		}
	}
	v.requestsCA = len(v.clientCAs) > 0
	slices.SortFunc(v.clientCAs, bytes.Compare)
	return v, true
}

func (v tlsView) matches(w tlsView) bool {
	return bytes.Equal(v.leaf, w.leaf) && v.requestsCA == w.requestsCA &&
		slices.EqualFunc(v.clientCAs, w.clientCAs, bytes.Equal)
}

// pemCerts parses the CERTIFICATE blocks of b, skipping anything unparsable.
func pemCerts(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
