package sinks

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// metaName is the metadata file inside a generation directory: what scheduling and
// verify need that the files cannot tell. It is never a visible name (it starts with
// "..", reserved for the sink), so clients never see it.
const (
	metaName    = "..meta.json"
	metaTmpName = "..meta.json.tmp"
	metaMode    = 0o644 // holds no secret
)

// metaVersion is the format version written; readers accept it and treat a missing
// file as "no metadata" (generations written before metadata existed).
const metaVersion = 1

// meta is the JSON stored in metaName.
type meta struct {
	Version int `json:"version"`
	// Issued is when the material was obtained (bundle.Issued); for CA-only instances the
	// last CA download, which advances on every download even when the CA is unchanged.
	Issued time.Time `json:"issued,omitzero"`
	// TokenExpiry is the login token's expiry (bundle.TokenExpiry).
	TokenExpiry time.Time `json:"token_expiry,omitzero"`
	Host        string    `json:"host,omitempty"`
	Engine      string    `json:"engine,omitempty"`
	DNSName     string    `json:"dns_name,omitempty"`
	// Previous is the generation that was current when this one was committed, kept
	// until the next rotation. Generation names are wall-clock times, so after the
	// clock stepped back the previous one can sort after the current one; without this
	// it would look like the leftover of a crashed write. Readers ignore it if absent.
	Previous string `json:"previous,omitempty"`
}

// metaOf is the metadata of b; a zero Issued becomes now.
func metaOf(b *bundle.Bundle, now time.Time) meta {
	m := meta{Version: metaVersion, Issued: b.Issued, TokenExpiry: b.TokenExpiry, Host: b.Host, Engine: b.Engine, DNSName: b.DNSName}
	if m.Issued.IsZero() {
		m.Issued = now
	}
	m.Issued = m.Issued.UTC()
	if !m.TokenExpiry.IsZero() {
		m.TokenExpiry = m.TokenExpiry.UTC()
	}
	return m
}

func (m meta) encode() []byte {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic(err) // a struct of strings and times always encodes
	}
	return append(data, '\n')
}

// apply copies the metadata into b.
func (m meta) apply(b *bundle.Bundle) {
	b.Issued, b.TokenExpiry, b.Host, b.Engine, b.DNSName = m.Issued, m.TokenExpiry, m.Host, m.Engine, m.DNSName
}

// readMeta reads the metadata of the generation g; ok is false when it has none.
func readMeta(g *dirHandle) (m meta, ok bool, err error) {
	data, err := readOptional(g, metaName)
	if err != nil || data == nil {
		return meta{}, false, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return meta{}, false, fmt.Errorf("%w: %s: %v", bundle.ErrInvalid, g.join(metaName), err)
	}
	if m.Version != metaVersion {
		return meta{}, false, fmt.Errorf("%w: %s: unknown version %d", bundle.ErrInvalid, g.join(metaName), m.Version)
	}
	return m, true, nil
}

// merged is the metadata to store when the files of the current generation (with
// metadata old) stay and b is written again: Issued advances to b's when that is later,
// and the token expiry follows b's.
func merged(old meta, b *bundle.Bundle) meta {
	m := old
	m.Version = metaVersion
	if b.Issued.After(m.Issued) {
		m.Issued = b.Issued.UTC()
	}
	if !b.TokenExpiry.IsZero() {
		m.TokenExpiry = b.TokenExpiry.UTC()
	}
	return m
}

// replaceMeta atomically replaces the metadata of the generation g: a fresh, fsynced
// temporary file renamed over it, then the directory fsynced.
func (f *File) replaceMeta(g *dirHandle, m meta) error {
	if err := g.unlink(metaTmpName); err != nil {
		return err
	}
	if err := g.createFile(metaTmpName, m.encode(), metaMode, f.uid, f.gid); err != nil {
		_ = g.unlink(metaTmpName)
		return err
	}
	if err := g.rename(metaTmpName, metaName); err != nil {
		_ = g.unlink(metaTmpName)
		return err
	}
	return g.sync()
}
