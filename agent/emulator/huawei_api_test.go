package emulator_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

const (
	hwProject  = "0123456789abcdef0123456789abcdef"
	hwInstance = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
	hwLinkPath = "v3/" + hwProject + "/instances/" + hwInstance + "/ssl-cert/download-link"
)

func startHuawei(t *testing.T, c *clock) *emulator.Emulator {
	t.Helper()
	o := emulator.Options{}
	if c != nil {
		o.Now = c.Now
	}
	e, err := emulator.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.CloseHuawei(); _ = e.Close() })
	e.AddHuaweiUser("acct", "ops", "pw")
	e.AddGeminiDBInstance(hwProject, hwInstance)
	return e
}

func iamToken(t *testing.T, e *emulator.Emulator, password string) (*http.Response, map[string]any) {
	t.Helper()
	body := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"ops","password":"` + password +
		`","domain":{"name":"acct"}}}},"scope":{"project":{"id":"` + hwProject + `"}}}}`
	resp, err := http.Post(e.URL()+"v3/auth/tokens", "application/json;charset=utf8", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return resp, m
}

func doGet(t *testing.T, u string, h http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestHuaweiIAMAndDownloadLink(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)}
	e := startHuawei(t, c)

	resp, m := iamToken(t, e, "wrong")
	if resp.StatusCode != 401 {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	if em, _ := m["error"].(map[string]any); em == nil || em["message"] != "The username or password is wrong." {
		t.Fatalf("wrong password body: %v", m)
	}

	resp, m = iamToken(t, e, "pw")
	tok := resp.Header.Get("X-Subject-Token")
	if resp.StatusCode != 201 || tok == "" {
		t.Fatalf("IAM: %d, token %v", resp.StatusCode, tok != "")
	}
	tm := m["token"].(map[string]any)
	if tm["expires_at"] != "2026-01-03T03:04:05.123456Z" || tm["issued_at"] != "2026-01-02T03:04:05.123456Z" {
		t.Fatalf("times: %v %v", tm["expires_at"], tm["issued_at"])
	}
	if p := tm["project"].(map[string]any); p["id"] != hwProject {
		t.Fatalf("project %v", p)
	}

	// No credentials, then the token.
	resp, body := doGet(t, e.URL()+hwLinkPath, nil)
	if resp.StatusCode != 401 || !strings.Contains(string(body), `"error_code":"APIGW.0301"`) || !strings.Contains(string(body), `"request_id"`) {
		t.Fatalf("no credentials: %d %s", resp.StatusCode, body)
	}
	resp, body = doGet(t, e.URL()+hwLinkPath, http.Header{"X-Auth-Token": {tok}})
	if resp.StatusCode != 200 {
		t.Fatalf("link: %d %s", resp.StatusCode, body)
	}
	var lr struct {
		Certs []struct {
			Category     string `json:"category"`
			DownloadLink string `json:"download_link"`
		} `json:"certs"`
	}
	if err := json.Unmarshal(body, &lr); err != nil || len(lr.Certs) != 1 || lr.Certs[0].Category != "international" {
		t.Fatalf("link body %s", body)
	}
	link, _ := url.Parse(lr.Certs[0].DownloadLink)
	api, _ := url.Parse(e.URL())
	if link.Host == api.Host || link.Hostname() != "127.0.0.1" {
		t.Fatalf("download link %s is not on a separate loopback host", link)
	}

	// The storage host: no credentials accepted, link signature and expiry checked.
	resp, body = doGet(t, link.String(), http.Header{"X-Auth-Token": {tok}})
	if resp.StatusCode != 400 || !strings.Contains(string(body), "<Code>InvalidArgument</Code>") {
		t.Fatalf("download with a token: %d %s", resp.StatusCode, body)
	}
	resp, body = doGet(t, link.String(), nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, e.GeminiDBCAPEM(hwProject, hwInstance)) {
		t.Fatalf("download: %d %s", resp.StatusCode, body)
	}
	altered := *link
	q := altered.Query()
	q.Set("Expires", "9999999999")
	altered.RawQuery = q.Encode()
	if resp, _ := doGet(t, altered.String(), nil); resp.StatusCode != 403 {
		t.Fatalf("altered link: %d", resp.StatusCode)
	}
	c.Add(11 * time.Minute)
	if resp, body := doGet(t, link.String(), nil); resp.StatusCode != 403 || !strings.Contains(string(body), "expired") {
		t.Fatalf("expired link: %d %s", resp.StatusCode, body)
	}

	// Token expiry, wrong project, wrong method, unknown instance.
	c.Add(24 * time.Hour)
	if resp, body := doGet(t, e.URL()+hwLinkPath, http.Header{"X-Auth-Token": {tok}}); resp.StatusCode != 401 || !strings.Contains(string(body), "token must be updated") {
		t.Fatalf("expired token: %d %s", resp.StatusCode, body)
	}
	resp, _ = iamToken(t, e, "pw")
	tok = resp.Header.Get("X-Subject-Token")
	other := strings.Replace(hwLinkPath, hwProject, "ffffffffffffffffffffffffffffffff", 1)
	if resp, _ := doGet(t, e.URL()+other, http.Header{"X-Auth-Token": {tok}}); resp.StatusCode != 401 {
		t.Fatalf("other project: %d", resp.StatusCode)
	}
	unknown := strings.Replace(hwLinkPath, hwInstance, "nope", 1)
	if resp, body := doGet(t, e.URL()+unknown, http.Header{"X-Auth-Token": {tok}}); resp.StatusCode != 404 || !strings.Contains(string(body), "DBS.200002") {
		t.Fatalf("unknown instance: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("POST", e.URL()+hwLinkPath, nil)
	req.Header.Set("X-Auth-Token", tok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("POST: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestHuaweiZipAndClose(t *testing.T) {
	e := startHuawei(t, nil)
	e.SetGeminiDBDownloadFormat(emulator.GeminiDBZip)
	resp, _ := iamToken(t, e, "pw")
	_, body := doGet(t, e.URL()+hwLinkPath, http.Header{"X-Auth-Token": {resp.Header.Get("X-Subject-Token")}})
	var lr struct {
		Certs []struct {
			DownloadLink string `json:"download_link"`
		} `json:"certs"`
	}
	_ = json.Unmarshal(body, &lr)
	link := lr.Certs[0].DownloadLink
	if !strings.Contains(link, ".zip?") {
		t.Fatalf("zip link %s", link)
	}
	e.Inject(emulator.Fault{Match: "GET /nosql-certs/", Status: 503, Times: 1})
	if resp, body := doGet(t, link, nil); resp.StatusCode != 503 || !strings.Contains(string(body), "<Code>ServiceUnavailable</Code>") {
		t.Fatalf("fault on OBS: %d %s", resp.StatusCode, body)
	}
	_, data := doGet(t, link, nil)
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range zr.File {
		if f.Name == "ca.pem" {
			rc, _ := f.Open()
			b, _ := io.ReadAll(rc)
			rc.Close()
			found = bytes.Equal(b, e.GeminiDBCAPEM(hwProject, hwInstance))
		}
	}
	if !found {
		t.Fatal("zip lacks ca.pem with the CA")
	}
	if err := e.CloseHuawei(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(link); err == nil {
		t.Fatal("OBS still serving after CloseHuawei")
	}
	if err := e.CloseHuawei(); err != nil {
		t.Fatal(err)
	}
}
