package emulator

import (
	"encoding/json"
	"net/http"
)

// AlloyDB Admin is a protobuf-transcoded API: its errors carry code, message, status and
// details, but no legacy errors[] array (reference §7.1, §7.3).

const alloyService = "alloydb.googleapis.com"

// writeAlloyError writes {"error":{code,message,status,details}}.
func writeAlloyError(w http.ResponseWriter, code int, status, message string, details ...map[string]any) {
	writeGoogleError(w, code, status, "", message, details...)
}

func resourceInfo(name string) map[string]any {
	return map[string]any{
		"@type":        "type.googleapis.com/google.rpc.ResourceInfo",
		"resourceType": "alloydb.googleapis.com/Cluster",
		"resourceName": name,
	}
}

func badRequestDetail(field, description string) map[string]any {
	return map[string]any{
		"@type":           "type.googleapis.com/google.rpc.BadRequest",
		"fieldViolations": []map[string]string{{"field": field, "description": description}},
	}
}

// writeAlloyInvalid is a 400 INVALID_ARGUMENT; field, when set, adds a BadRequest detail.
func writeAlloyInvalid(w http.ResponseWriter, field, message string) {
	if field == "" {
		writeAlloyError(w, http.StatusBadRequest, "INVALID_ARGUMENT", message)
		return
	}
	writeAlloyError(w, http.StatusBadRequest, "INVALID_ARGUMENT", message, badRequestDetail(field, message))
}

// writeAlloyUnauthenticated is the 401 for a missing (present=false) or invalid/expired token.
func writeAlloyUnauthenticated(w http.ResponseWriter, present bool, method string) {
	msg, challenge, info := unauthenticated(present)
	w.Header().Set("WWW-Authenticate", challenge)
	d := errorInfo(info, map[string]string{"service": alloyService, "method": method})
	writeAlloyError(w, http.StatusUnauthorized, "UNAUTHENTICATED", msg, d)
}

func writeAlloyScopeInsufficient(w http.ResponseWriter, method string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="insufficient_scope"`)
	d := errorInfo("ACCESS_TOKEN_SCOPE_INSUFFICIENT", map[string]string{"service": alloyService, "method": method})
	writeAlloyError(w, http.StatusForbidden, "PERMISSION_DENIED", "Request had insufficient authentication scopes.", d)
}

// AlloyDBErrorBody is the JSON error body AlloyDB sends with status, for Fault.Body:
// injected faults without a Body get the Cloud SQL-style body (with the legacy errors[]
// array), which clients parse the same way but which AlloyDB itself does not send.
func AlloyDBErrorBody(status int) string {
	var obj googleErrorObj
	obj.Code = status
	switch status {
	case http.StatusBadRequest:
		obj.Status, obj.Message = "INVALID_ARGUMENT", "Request contains an invalid argument."
	case http.StatusUnauthorized:
		obj.Status = "UNAUTHENTICATED"
		obj.Message = "Request had invalid authentication credentials. Expected OAuth 2 access token, " +
			"login cookie or other valid authentication credential. " +
			"See https://developers.google.com/identity/sign-in/web/devconsole-project."
		obj.Details = []map[string]any{errorInfo("ACCESS_TOKEN_EXPIRED", map[string]string{"service": alloyService})}
	case http.StatusForbidden:
		const perm = "alloydb.clusters.generateClientCertificate"
		obj.Status = "PERMISSION_DENIED"
		obj.Message = "Permission '" + perm + "' denied on resource (or it may not exist)."
		d := errorInfo("IAM_PERMISSION_DENIED", map[string]string{"permission": perm})
		d["domain"] = "iam.googleapis.com"
		obj.Details = []map[string]any{d}
	case http.StatusNotFound:
		obj.Status, obj.Message = "NOT_FOUND", "Resource was not found."
	case http.StatusConflict:
		obj.Status, obj.Message = "ABORTED", "The operation was aborted."
	case http.StatusTooManyRequests:
		obj.Status = "RESOURCE_EXHAUSTED"
		obj.Message = "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of service " +
			"'alloydb.googleapis.com' for consumer 'project_number:123456789012'."
		obj.Details = []map[string]any{errorInfo("RATE_LIMIT_EXCEEDED", map[string]string{"service": alloyService})}
	case http.StatusInternalServerError:
		obj.Status, obj.Message = "INTERNAL", "Internal error encountered."
	case http.StatusNotImplemented:
		obj.Status, obj.Message = "UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled."
	case http.StatusServiceUnavailable:
		obj.Status, obj.Message = "UNAVAILABLE", "The service is currently unavailable."
	case http.StatusGatewayTimeout:
		obj.Status, obj.Message = "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
	default:
		obj.Message = http.StatusText(status)
	}
	b, _ := json.Marshal(googleError{Error: obj})
	return string(b)
}
