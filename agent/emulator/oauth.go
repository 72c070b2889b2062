package emulator

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"time"

	"golang.org/x/oauth2/jws"
)

// OAuth scopes the emulator knows.
const (
	ScopeCloudPlatform = "https://www.googleapis.com/auth/cloud-platform"
	ScopeSQLAdmin      = "https://www.googleapis.com/auth/sqlservice.admin"
	ScopeSQLLogin      = "https://www.googleapis.com/auth/sqlservice.login"
)

const (
	grantJWTBearer    = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	grantRefreshToken = "refresh_token"
	// jwtMaxLifetime and jwtSkew are the token endpoint's limits on assertion iat/exp.
	jwtMaxLifetime = time.Hour
	jwtSkew        = 5 * time.Minute
)

type authState struct {
	saKeys map[string]*saKey       // key: private_key_id
	users  map[string]*userCred    // key: client_id
	tokens map[string]*accessToken // key: token value
}

func newAuthState() authState {
	return authState{saKeys: map[string]*saKey{}, users: map[string]*userCred{}, tokens: map[string]*accessToken{}}
}

type saKey struct {
	email    string
	pub      *rsa.PublicKey
	tokenURI string
}

type userCred struct {
	secret, refreshToken string
}

type accessToken struct {
	expiry  time.Time
	scopes  []string
	subject string
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *Emulator) tokenURI() (string, error) {
	u := e.URL()
	if u == "" {
		return "", errors.New("emulator: no URL yet; call Start (or SetURL when serving Handler yourself)")
	}
	return u + "token", nil
}

// ServiceAccountJSON returns a service_account credentials file for email whose key the
// emulator knows (a fresh RSA-2048 key per call), with token_uri = URL()+"token". The
// emulator must have a URL (Start or SetURL).
func (e *Emulator) ServiceAccountJSON(email string) ([]byte, error) {
	uri, err := e.tokenURI()
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyID := randomHex(20)
	e.mu.Lock()
	e.auth.saKeys[keyID] = &saKey{email: email, pub: &key.PublicKey, tokenURI: uri}
	e.mu.Unlock()
	return json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  projectOf(email),
		"private_key_id":              keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                email,
		"client_id":                   "1" + randomDigits(20),
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   uri,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	}, "", "  ")
}

// projectOf guesses the project of "name@proj.iam.gserviceaccount.com".
func projectOf(email string) string {
	_, domain, _ := strings.Cut(email, "@")
	if p, ok := strings.CutSuffix(domain, ".iam.gserviceaccount.com"); ok && p != "" {
		return p
	}
	return "emulator-project"
}

func randomDigits(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}

// AuthorizedUserJSON returns an authorized_user credentials file (client_id,
// client_secret, refresh_token, token_uri = URL()+"token") the emulator accepts for
// grant_type=refresh_token. Its tokens carry the cloud-platform scope.
func (e *Emulator) AuthorizedUserJSON() ([]byte, error) {
	uri, err := e.tokenURI()
	if err != nil {
		return nil, err
	}
	id := randomDigits(12) + "-emulator.apps.googleusercontent.com"
	u := &userCred{secret: "emu-secret-" + randomHex(12), refreshToken: "1//emu-" + randomHex(24)}
	e.mu.Lock()
	e.auth.users[id] = u
	e.mu.Unlock()
	return json.MarshalIndent(map[string]string{
		"type":          "authorized_user",
		"client_id":     id,
		"client_secret": u.secret,
		"refresh_token": u.refreshToken,
		"token_uri":     uri,
	}, "", "  ")
}

// AccessToken issues an access token directly (as if someone else fetched it, e.g. for
// a token_file), valid for TokenLifetime. No scopes means cloud-platform.
func (e *Emulator) AccessToken(scopes ...string) (token string, expiry time.Time) {
	if len(scopes) == 0 {
		scopes = []string{ScopeCloudPlatform}
	}
	return e.issueToken("token-file@emulator", scopes)
}

func (e *Emulator) issueToken(subject string, scopes []string) (string, time.Time) {
	tok := "ya29.emu-" + base64.RawURLEncoding.EncodeToString([]byte(randomHex(24)))
	exp := e.now().Add(e.opts.TokenLifetime)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.auth.tokens[tok] = &accessToken{expiry: exp, scopes: scopes, subject: subject}
	return tok, exp
}

// lookupToken returns a live token's record, or nil.
func (e *Emulator) lookupToken(tok string) *accessToken {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.auth.tokens[tok]
	if t == nil || !e.now().Before(t.expiry) {
		return nil
	}
	return t
}

// serveToken is POST /token: the JWT-bearer grant (service accounts) and the
// refresh-token grant (authorized users), answering like oauth2.googleapis.com.
func (e *Emulator) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeOAuthError(w, http.StatusMethodNotAllowed, "invalid_request", "The token endpoint only accepts POST.")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Malformed form body.")
		return
	}
	var (
		subject string
		scopes  []string
		oe      *oauthErr
	)
	switch gt := r.PostForm.Get("grant_type"); gt {
	case grantJWTBearer:
		subject, scopes, oe = e.checkAssertion(r.PostForm.Get("assertion"))
	case grantRefreshToken:
		subject, scopes, oe = e.checkRefresh(r)
	case "":
		oe = &oauthErr{http.StatusBadRequest, "invalid_request", "Missing required parameter: grant_type"}
	default:
		oe = &oauthErr{http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: " + gt}
	}
	if oe != nil {
		writeOAuthError(w, oe.status, oe.code, oe.desc)
		return
	}
	tok, _ := e.issueToken(subject, scopes)
	secs := int(e.opts.TokenLifetime.Round(time.Second) / time.Second)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_in":   max(secs, 1),
		"token_type":   "Bearer",
	})
}

type oauthErr struct {
	status     int
	code, desc string
}

func invalidGrant(desc string) *oauthErr {
	return &oauthErr{http.StatusBadRequest, "invalid_grant", desc}
}

// checkAssertion verifies an RS256 JWT assertion as Google's token endpoint does:
// known key, signature, iss, aud == token_uri, a short-lived iat/exp around now, scope.
func (e *Emulator) checkAssertion(assertion string) (string, []string, *oauthErr) {
	if assertion == "" {
		return "", nil, &oauthErr{http.StatusBadRequest, "invalid_request", "Missing required parameter: assertion"}
	}
	hdr, err := decodeJWTHeader(assertion)
	if err != nil {
		return "", nil, invalidGrant("Invalid JWT: " + err.Error())
	}
	if hdr.Algorithm != "RS256" {
		return "", nil, invalidGrant("Invalid JWT: unsupported signing algorithm " + hdr.Algorithm)
	}
	claims, err := jws.Decode(assertion)
	if err != nil {
		return "", nil, invalidGrant("Invalid JWT: cannot decode the claim set.")
	}
	key := e.findSAKey(hdr.KeyID, claims.Iss)
	if key == nil {
		return "", nil, invalidGrant("Invalid grant: account not found")
	}
	if jws.Verify(assertion, key.pub) != nil || key.email != claims.Iss {
		return "", nil, invalidGrant("Invalid JWT Signature.")
	}
	if claims.Aud != key.tokenURI {
		return "", nil, invalidGrant("Invalid JWT: Failed audience check. The expected value was: " + key.tokenURI)
	}
	if !e.jwtTimesOK(claims.Iat, claims.Exp) {
		return "", nil, invalidGrant("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
	}
	scopes := strings.Fields(claims.Scope)
	if len(scopes) == 0 {
		return "", nil, &oauthErr{http.StatusBadRequest, "invalid_scope", "Empty or missing scope not allowed."}
	}
	return claims.Iss, scopes, nil
}

func (e *Emulator) jwtTimesOK(iat, exp int64) bool {
	now := e.now()
	it, et := time.Unix(iat, 0), time.Unix(exp, 0)
	return iat > 0 && et.After(it) && et.Sub(it) <= jwtMaxLifetime &&
		!it.After(now.Add(jwtSkew)) && et.After(now.Add(-jwtSkew))
}

func decodeJWTHeader(tok string) (*jws.Header, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("token must have 3 parts")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, errors.New("bad header encoding")
	}
	var h jws.Header
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, errors.New("bad header JSON")
	}
	return &h, nil
}

func (e *Emulator) findSAKey(keyID, email string) *saKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	if keyID != "" {
		return e.auth.saKeys[keyID]
	}
	for _, k := range e.auth.saKeys {
		if k.email == email {
			return k
		}
	}
	return nil
}

// checkRefresh verifies a refresh-token grant; client credentials in the form or in
// HTTP Basic auth.
func (e *Emulator) checkRefresh(r *http.Request) (string, []string, *oauthErr) {
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if bid, bsecret, ok := r.BasicAuth(); ok {
		id, secret = bid, bsecret
	}
	e.mu.Lock()
	u := e.auth.users[id]
	e.mu.Unlock()
	if u == nil || u.secret != secret {
		return "", nil, &oauthErr{http.StatusUnauthorized, "invalid_client", "Unauthorized"}
	}
	if rt := r.PostForm.Get("refresh_token"); rt == "" || rt != u.refreshToken {
		return "", nil, invalidGrant("Token has been expired or revoked.")
	}
	return "user-" + id, []string{ScopeCloudPlatform, "openid", "https://www.googleapis.com/auth/userinfo.email"}, nil
}

// authorize checks the bearer token of an API request and that it carries one of
// scopes; on failure it writes the 401/403 and returns nil.
func (e *Emulator) authorize(w http.ResponseWriter, r *http.Request, method string, scopes ...string) *accessToken {
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	if h == "" || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		writeUnauthenticated(w, false)
		return nil
	}
	t := e.lookupToken(strings.TrimSpace(tok))
	if t == nil {
		writeUnauthenticated(w, true)
		return nil
	}
	for _, s := range scopes {
		for _, have := range t.scopes {
			if s == have {
				return t
			}
		}
	}
	writeScopeInsufficient(w, method)
	return nil
}

// RevokeAccessTokens invalidates every OAuth access token issued so far (as revoking
// a key or a session does); API calls with them get 401 UNAUTHENTICATED, while the
// clients holding them still believe them valid. New tokens are issued as before.
func (e *Emulator) RevokeAccessTokens() {
	e.mu.Lock()
	defer e.mu.Unlock()
	clear(e.auth.tokens)
}
