package darktrace

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
)

// DateLayout is the layout of the DTAPI-Date header the client sends: the compact form the
// Darktrace API guide lists first (for example 20230101T120000), always in UTC.
const DateLayout = "20060102T150405"

// Sign returns the DTAPI-Signature for one request: the lowercase hex HMAC-SHA1, keyed with the
// private token, of apiRequest + "\n" + public + "\n" + date. apiRequest is the path and query
// exactly as sent on the wire, without scheme or host ("/modelbreaches?starttime=1&endtime=2"),
// or the bare path when there is no query; date is the exact DTAPI-Date header value.
func Sign(private, public, apiRequest, date string) string {
	mac := hmac.New(sha1.New, []byte(private))
	mac.Write([]byte(apiRequest))
	mac.Write([]byte{'\n'})
	mac.Write([]byte(public))
	mac.Write([]byte{'\n'})
	mac.Write([]byte(date))
	return hex.EncodeToString(mac.Sum(nil))
}
