package cloudsql

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
)

// Operation statuses (sql#operation status).
const (
	OpPending = "PENDING"
	OpRunning = "RUNNING"
	OpDone    = "DONE"
)

// Operation is the part of a Cloud SQL operation (sql#operation) a caller polls for.
// A DONE operation with Errors failed.
type Operation struct {
	// Name is the bare operation ID.
	Name string
	// Status is OpPending, OpRunning or OpDone (or another value the API adds).
	Status string
	// Errors are the operation's errors (error.errors[]); empty on success.
	Errors []OpError
}

// OpError is one error of a failed operation.
type OpError struct {
	// Code is Cloud SQL's error code string, e.g. "INTERNAL_ERROR".
	Code string
	// Message is the human-readable message.
	Message string
}

// Done reports whether the operation finished (successfully or not).
func (o *Operation) Done() bool { return o.Status == OpDone }

// Err returns nil unless the operation is done with errors; then one error listing them.
func (o *Operation) Err() error {
	if !o.Done() || len(o.Errors) == 0 {
		return nil
	}
	parts := make([]string, len(o.Errors))
	for i, e := range o.Errors {
		parts[i] = e.Code + ": " + e.Message
	}
	return fmt.Errorf("operation %s failed: %s", o.Name, strings.Join(parts, "; "))
}

type operationJSON struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Error  *struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	} `json:"error"`
}

func (j *operationJSON) operation() *Operation {
	op := &Operation{Name: j.Name, Status: j.Status}
	if j.Error != nil {
		for _, e := range j.Error.Errors {
			op.Errors = append(op.Errors, OpError{Code: e.Code, Message: e.Message})
		}
	}
	return op
}

// ResetSSL calls instances.resetSslConfig — destructive: it deletes every client
// certificate of the instance and makes a new server certificate — and returns the
// name of the operation to poll with Operation. It sends no body.
func (p *Provider) ResetSSL(ctx context.Context) (opName string, err error) {
	var op operationJSON
	req := p.request(http.MethodPost, p.inst+"/resetSslConfig", CallResetSSLConfig, nil)
	req.Permission = "cloudsql.instances.resetSslConfig"
	if err := gapi.Do(ctx, p.client, req, &op); err != nil {
		return "", err
	}
	if op.Name == "" {
		return "", gapi.BadResponse(CallResetSSLConfig, p.target, errors.New("the response has no operation name"), "")
	}
	return op.Name, nil
}

// Operation fetches the operation name (operations.get) once; the caller polls.
func (p *Provider) Operation(ctx context.Context, name string) (*Operation, error) {
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("cloudsql: invalid operation name %q", name)
	}
	var op operationJSON
	req := p.request(http.MethodGet, p.proj+"/operations/"+escapeSegment(name), CallOperationsGet, nil)
	req.Permission = "cloudsql.instances.get"
	if err := gapi.Do(ctx, p.client, req, &op); err != nil {
		return nil, err
	}
	if op.Status == "" {
		return nil, gapi.BadResponse(CallOperationsGet, p.target, errors.New("the response has no operation status"), "")
	}
	return op.operation(), nil
}
