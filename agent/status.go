package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"text/tabwriter"
	"time"

	"github.com/dbcert-agent/dbcert-agent/config"
)

// Instance states reported by Status.
const (
	StateOK      = "ok"      // valid files, not yet due
	StateDue     = "due"     // valid files, renewal time passed
	StateExpired = "expired" // files on disk, certificate expired
	StateMissing = "missing" // nothing written yet
	StateInvalid = "invalid" // partial, mismatched or unreadable files
)

// InstanceStatus is what the files of one instance say, read from disk only.
type InstanceStatus struct {
	Instance    string    `json:"instance"`
	Type        string    `json:"type"`
	State       string    `json:"state"`
	Error       string    `json:"error,omitempty"`
	Dirs        []string  `json:"dirs"`
	CertFile    string    `json:"cert_file,omitempty"`
	KeyFile     string    `json:"key_file,omitempty"`
	CAFile      string    `json:"ca_file"`
	Subject     string    `json:"subject,omitempty"`
	Serial      string    `json:"serial,omitempty"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	SecondsLeft int64     `json:"seconds_left"`
	CANotAfter  time.Time `json:"ca_not_after,omitzero"`
	NextRenewal time.Time `json:"next_renewal,omitzero"`
}

// Status reads every instance's sinks (no API calls, no credentials) and reports them
// in config order.
func Status(cfg *config.Config, now time.Time) ([]InstanceStatus, error) {
	out := make([]InstanceStatus, 0, len(cfg.Instances))
	for _, ci := range cfg.Instances {
		in := &Instance{Name: ci.Name, Renewal: ci.Renewal, NeedsKey: ci.IssuesClientCert(), Spec: ci}
		st := InstanceStatus{Instance: ci.Name, Type: ci.Type}
		for i, cs := range ci.Sinks {
			s, err := OpenFileSink(ci, cs)
			if err != nil {
				return nil, fmt.Errorf("instance %q: %w", ci.Name, err)
			}
			in.Sinks = append(in.Sinks, s)
			st.Dirs = append(st.Dirs, s.Dir())
			if i == 0 {
				p := s.Paths()
				st.CAFile = p.CA
				if in.NeedsKey {
					st.CertFile, st.KeyFile = p.Cert, p.Key
				}
			}
		}
		fillStatus(&st, in, now)
		out = append(out, st)
	}
	return out, nil
}

func fillStatus(st *InstanceStatus, in *Instance, now time.Time) {
	b, err := (&Agent{}).current(in, now)
	if err != nil {
		st.Error = err.Error()
		switch {
		case errors.Is(err, fs.ErrNotExist):
			st.State = StateMissing
		default:
			st.State = StateInvalid
		}
	}
	if b == nil {
		// current refuses expired files; read the first sink alone to say what is there.
		if first, ferr := in.Sinks[0].Current(); ferr == nil && first.HasClientCert() && !now.Before(first.NotAfter()) {
			b, st.State = first, StateExpired
		}
	}
	if b == nil {
		return
	}
	if leaf := b.Leaf(); leaf != nil {
		st.Subject = leaf.Subject.String()
		st.Serial = leaf.SerialNumber.String()
		st.NotAfter = b.NotAfter().UTC()
		st.SecondsLeft = int64(max(0, b.NotAfter().Sub(now)/time.Second))
		st.NextRenewal = in.renewAt(b, 0).UTC()
	}
	if !in.NeedsKey {
		st.NextRenewal = in.nextDownload(b, now).UTC()
	}
	st.CANotAfter = b.CANotAfter().UTC()
	if st.State == "" {
		st.State = StateOK
		if !st.NextRenewal.IsZero() && !now.Before(st.NextRenewal) {
			st.State = StateDue
		}
	}
}

// WriteStatusTable prints statuses as an aligned table.
func WriteStatusTable(w io.Writer, sts []InstanceStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tSTATE\tNOT AFTER\tLEFT\tNEXT RENEWAL\tCA NOT AFTER\tSERIAL\tSUBJECT\tFILES")
	for _, s := range sts {
		files := s.CAFile
		if s.CertFile != "" {
			files = s.CertFile + " " + s.KeyFile + " " + s.CAFile
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Instance, s.State, tableTime(s.NotAfter),
			tableLeft(s, now), tableTime(s.NextRenewal), tableTime(s.CANotAfter), dash(s.Serial), dash(s.Subject), files)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sts {
		if s.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", s.Instance, s.Error)
		}
	}
	return nil
}

// WriteStatusJSON prints statuses as one JSON document.
func WriteStatusJSON(w io.Writer, sts []InstanceStatus) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"instances": sts})
}

func tableTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func tableLeft(s InstanceStatus, now time.Time) string {
	if s.NotAfter.IsZero() {
		return "-"
	}
	return max(0, s.NotAfter.Sub(now)).Round(time.Second).String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
