package emulator

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
)

const jsonContentType = "application/json; charset=UTF-8"

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", jsonContentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// googleError is the Google API error body (reference §7.1).
type googleError struct {
	Error googleErrorObj `json:"error"`
}

type googleErrorObj struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Errors  []googleErrorItem `json:"errors,omitempty"`
	Status  string            `json:"status,omitempty"`
	Details []map[string]any  `json:"details,omitempty"`
}

type googleErrorItem struct {
	Message string `json:"message"`
	Domain  string `json:"domain"`
	Reason  string `json:"reason"`
}

// writeGoogleError writes {"error":{code,message,errors[{message,domain,reason}],status,details}}.
func writeGoogleError(w http.ResponseWriter, code int, status, reason, message string, details ...map[string]any) {
	obj := googleErrorObj{Code: code, Message: message, Status: status, Details: details}
	if reason != "" {
		obj.Errors = []googleErrorItem{{Message: message, Domain: "global", Reason: reason}}
	}
	writeJSON(w, code, googleError{Error: obj})
}

func errorInfo(reason string, metadata map[string]string) map[string]any {
	d := map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
	if metadata != nil {
		d["metadata"] = metadata
	}
	return d
}

// writeDefaultError writes the body Google sends for a bare status (used by faults).
func writeDefaultError(w http.ResponseWriter, code int) {
	switch code {
	case http.StatusBadRequest:
		writeGoogleError(w, code, "INVALID_ARGUMENT", "invalid", "Invalid request.")
	case http.StatusUnauthorized:
		writeUnauthenticated(w, false)
	case http.StatusForbidden:
		writeNotAuthorized(w)
	case http.StatusNotFound:
		writeGoogleError(w, code, "NOT_FOUND", "notFound", "The requested resource was not found.")
	case http.StatusConflict:
		writeGoogleError(w, code, "ABORTED", "operationInProgress",
			"Operation failed because another operation was already in progress.")
	case http.StatusTooManyRequests:
		msg := "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service " +
			"'sqladmin.googleapis.com' for consumer 'project_number:123456789012'."
		writeGoogleError(w, code, "RESOURCE_EXHAUSTED", "rateLimitExceeded", msg,
			errorInfo("RATE_LIMIT_EXCEEDED", nil), map[string]any{"@type": "type.googleapis.com/google.rpc.Help"})
	case http.StatusInternalServerError:
		writeGoogleError(w, code, "INTERNAL", "backendError", "Internal error encountered.")
	case http.StatusNotImplemented:
		writeGoogleError(w, code, "UNIMPLEMENTED", "", "Operation is not implemented, or supported, or enabled.")
	case http.StatusServiceUnavailable:
		writeGoogleError(w, code, "UNAVAILABLE", "backendError", "The service is currently unavailable.")
	case http.StatusGatewayTimeout:
		writeGoogleError(w, code, "DEADLINE_EXCEEDED", "", "Deadline expired before operation could complete.")
	default:
		writeGoogleError(w, code, "", "", http.StatusText(code))
	}
}

// unauthenticated is Google's 401 wording for a missing (present=false) or an
// invalid/expired token: message, WWW-Authenticate challenge, ErrorInfo reason.
func unauthenticated(present bool) (msg, challenge, info string) {
	const tail = " Expected OAuth 2 access token, login cookie or other valid authentication credential. " +
		"See https://developers.google.com/identity/sign-in/web/devconsole-project."
	if present {
		return "Request had invalid authentication credentials." + tail,
			`Bearer realm="https://accounts.google.com/", error="invalid_token"`, "ACCESS_TOKEN_EXPIRED"
	}
	return "Request is missing required authentication credential." + tail,
		`Bearer realm="https://accounts.google.com/"`, "CREDENTIALS_MISSING"
}

// writeUnauthenticated is the 401 for a missing (present=false) or invalid/expired token.
func writeUnauthenticated(w http.ResponseWriter, present bool) {
	msg, challenge, info := unauthenticated(present)
	w.Header().Set("WWW-Authenticate", challenge)
	writeGoogleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "authError", msg, errorInfo(info, nil))
}

// writeNotAuthorized is Cloud SQL's 403 for a missing permission or an invisible instance.
func writeNotAuthorized(w http.ResponseWriter) {
	writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED", "notAuthorized",
		"The client is not authorized to make this request.")
}

func writeScopeInsufficient(w http.ResponseWriter, method string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="insufficient_scope"`)
	writeGoogleError(w, http.StatusForbidden, "PERMISSION_DENIED", "insufficientPermissions",
		"Request had insufficient authentication scopes.",
		errorInfo("ACCESS_TOKEN_SCOPE_INSUFFICIENT", map[string]string{"service": "sqladmin.googleapis.com", "method": method}))
}

func writeInvalidArgument(w http.ResponseWriter, reason, message string) {
	writeGoogleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", reason, message)
}

// writeOAuthError is the token endpoint's error body (RFC 6749 §5.2).
func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

// writeNotFoundPage is the HTML 404 Google's front end sends for unknown URLs.
func writeNotFoundPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = fmt.Fprintf(w, "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"+
		"  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>%s</code> was not found on this server."+
		"  <ins>That’s all we know.</ins>\n", html.EscapeString(r.URL.Path))
}
