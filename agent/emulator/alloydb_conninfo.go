package emulator

// AlloyDB Admin instances.getConnectionInfo (reference §4.3):
// GET /{v1|v1beta|v1alpha}/projects/{p}/locations/{l}/clusters/{c}/instances/{i}/connectionInfo.
// v1 has no pscDnsName; v1beta and v1alpha do. Unknown clusters or instances are 404
// NOT_FOUND in AlloyDB's error style.

import (
	"net/http"
	"strings"
)

// AlloyDBInstance describes an instance of a fake AlloyDB cluster. Empty fields are left
// out of connectionInfo, as the API leaves out what an instance does not have.
type AlloyDBInstance struct {
	// IPAddress is the private IP (ipAddress); default "127.0.0.1".
	IPAddress string
	// PublicIPAddress is publicIpAddress; "" when public IP is not enabled.
	PublicIPAddress string
	// PSCDNSName is pscDnsName (v1beta/v1alpha only); "" when PSC is not enabled.
	PSCDNSName string
	// NoPrivateIP leaves ipAddress out (IPAddress is then ignored).
	NoPrivateIP bool
}

type alloyInstance struct {
	name string
	uid  string
	opts AlloyDBInstance
}

// AddAlloyDBInstance adds (or replaces) instance in an existing cluster (AddAlloyDBCluster
// first); false when the cluster is unknown.
func (e *Emulator) AddAlloyDBInstance(project, location, cluster, instance string, o AlloyDBInstance) bool {
	if o.IPAddress == "" && !o.NoPrivateIP {
		o.IPAddress = "127.0.0.1"
	}
	if o.NoPrivateIP {
		o.IPAddress = ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cl := e.alloy.clusters[alloyKey(project, location, cluster)]
	if cl == nil {
		return false
	}
	if cl.instances == nil {
		cl.instances = map[string]*alloyInstance{}
	}
	cl.instances[instance] = &alloyInstance{name: instance, uid: newOperationID(), opts: o}
	return true
}

// parseAlloyInstancePath splits a decoded connectionInfo path.
func parseAlloyInstancePath(p string) (ver, project, location, cluster, instance string, ok bool) {
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(seg) != 10 || seg[1] != "projects" || seg[3] != "locations" || seg[5] != "clusters" ||
		seg[7] != "instances" || seg[9] != "connectionInfo" {
		return "", "", "", "", "", false
	}
	switch seg[0] {
	case "v1", "v1beta", "v1alpha":
	default:
		return "", "", "", "", "", false
	}
	for _, i := range []int{2, 4, 6, 8} {
		if seg[i] == "" {
			return "", "", "", "", "", false
		}
	}
	return seg[0], seg[2], seg[4], seg[6], seg[8], true
}

// serveAlloyConnectionInfo answers connectionInfo; false means "not this method".
func (e *Emulator) serveAlloyConnectionInfo(w http.ResponseWriter, r *http.Request) bool {
	ver, project, location, cluster, instance, ok := parseAlloyInstancePath(r.URL.Path)
	if !ok || r.Method != http.MethodGet {
		return false
	}
	if e.alloyAuthorize(w, r, alloyMethod(ver, "GetConnectionInfo")) == nil {
		return true
	}
	name := alloyKey(project, location, cluster) + "/instances/" + instance
	e.mu.Lock()
	var inst *alloyInstance
	if cl := e.alloy.clusters[alloyKey(project, location, cluster)]; cl != nil {
		inst = cl.instances[instance]
	}
	e.mu.Unlock()
	if inst == nil {
		writeAlloyError(w, http.StatusNotFound, "NOT_FOUND", "Resource '"+name+"' was not found", resourceInfo(name))
		return true
	}
	body := map[string]any{"name": name + "/connectionInfo", "instanceUid": inst.uid}
	if inst.opts.IPAddress != "" {
		body["ipAddress"] = inst.opts.IPAddress
	}
	if inst.opts.PublicIPAddress != "" {
		body["publicIpAddress"] = inst.opts.PublicIPAddress
	}
	if inst.opts.PSCDNSName != "" && ver != "v1" {
		body["pscDnsName"] = inst.opts.PSCDNSName
	}
	writeJSON(w, http.StatusOK, body)
	return true
}
