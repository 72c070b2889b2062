package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/cloudsql"
)

// sslResetter is what reset-ssl needs from a provider (Cloud SQL).
type sslResetter interface {
	ResetSSL(ctx context.Context) (opName string, err error)
	Operation(ctx context.Context, name string) (*cloudsql.Operation, error)
}

// NotResettableError says reset-ssl was asked for an instance whose provider cannot
// reset its SSL configuration (only Cloud SQL can).
type NotResettableError struct{ Instance string }

func (e *NotResettableError) Error() string {
	return fmt.Sprintf("instance %q is not a Cloud SQL instance; reset-ssl works only for instance \"cloudsql\" blocks", e.Instance)
}

// Operation polling: from 1 s, doubling, at most 10 s between polls.
const (
	pollFirst = time.Second
	pollMax   = 10 * time.Second
)

// ResetSSL resets the SSL configuration of a Cloud SQL instance (instances.resetSslConfig:
// every client certificate of the instance is deleted and the server gets a new
// certificate and CA), waits for the operation, then fetches a fresh certificate and CA,
// writes every sink (under the sinks' lock, so a running daemon and this never write
// the same directory at once) and runs the hooks. progress receives one line per step.
// Errors of the API and of the operation (its error codes and messages) are returned.
func (a *Agent) ResetSSL(ctx context.Context, name string, progress func(string)) error {
	sel, err := a.selectInstances([]string{name})
	if err != nil {
		return err
	}
	in := sel[0]
	if in.Err != nil {
		return in.Err
	}
	r, ok := in.Provider.(sslResetter)
	if !ok {
		return &NotResettableError{Instance: name}
	}
	log := a.log.With("instance", in.Name)
	opName, err := r.ResetSSL(ctx)
	if err != nil {
		return err
	}
	progress(fmt.Sprintf("resetSslConfig accepted; waiting for operation %s", opName))
	if err := a.waitOperation(ctx, r, opName, progress); err != nil {
		return err
	}
	progress("the instance has a new server CA; fetching a new certificate and CA")
	prev, _ := a.current(in, a.now())
	b, err := a.fetch(ctx, in, nil, log)
	if err != nil {
		return fmt.Errorf("the SSL configuration was reset, but fetching new files failed: %w", err)
	}
	// Writes and hooks are not cut short by a stop signal (a hook's timeout bounds it).
	changed, err := a.store(context.WithoutCancel(ctx), in, b, prev, log)
	if err != nil {
		return err
	}
	if changed {
		progress(fmt.Sprintf("wrote new files (certificate serial %s, valid until %s); hooks ran", b.Leaf().SerialNumber, fmtTime(b.NotAfter())))
	}
	return nil
}

// waitOperation polls an operation with backoff until it is DONE; a DONE operation with
// errors is returned as an error naming its codes and messages. Poll errors a retry can
// help are retried.
func (a *Agent) waitOperation(ctx context.Context, r sslResetter, name string, progress func(string)) error {
	wait, last := pollFirst, ""
	for {
		op, err := r.Operation(ctx, name)
		switch {
		case err != nil:
			if ok, _ := retryable(err); !ok || ctx.Err() != nil {
				return fmt.Errorf("polling operation %s: %w", name, err)
			}
			progress(fmt.Sprintf("polling operation %s failed (%v); retrying", name, err))
		case op.Done():
			if err := op.Err(); err != nil {
				return err
			}
			progress(fmt.Sprintf("operation %s: DONE", name))
			return nil
		case op.Status != last:
			progress(fmt.Sprintf("operation %s: %s", name, op.Status))
			last = op.Status
		}
		if err := a.sleep(ctx, wait); err != nil {
			return fmt.Errorf("waiting for operation %s: %w", name, err)
		}
		wait = min(wait*2, pollMax)
	}
}
