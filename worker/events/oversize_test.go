package events

import (
	"testing"

	"github.com/dtfleet/dtfleet/internal/config"
)

// TestKeyFromHead: the key of an event too large to read comes from the start the scanner kept
// when its key field lies there whole, and is never guessed from a value cut off by the head's
// end.
func TestKeyFromHead(t *testing.T) {
	for _, tc := range []struct {
		name, service, head, want string
	}{
		{"breach pbid first", config.ServiceModelBreaches, `{"pbid":42,"time":1,"model":{"then":{"x":"`, "mb:42"},
		{"breach pbid after nested values", config.ServiceModelBreaches, `{"a":{"b":[1,"}\"]"]},"c":"x,y","pbid":"7","pad":"xx`, "mb:7"},
		{"breach pbid cut off", config.ServiceModelBreaches, `{"time":1,"pbid":123`, ""},
		{"breach pbid beyond the head", config.ServiceModelBreaches, `{"pad":"xxxxxxxx`, ""},
		{"breach unusable pbid", config.ServiceModelBreaches, `{"pbid":true,"pad":"`, ""},
		{"incident id", config.ServiceIncidentEvents, `{"id":"a1b2-c3","summary":"`, "ai:a1b2-c3"},
		{"action codeid", config.ServiceAntigena, `{"codeid":9001,"did":3,"label":"`, "ag:9001"},
		{"not an object", config.ServiceModelBreaches, `[{"pbid":1}`, ""},
		{"empty", config.ServiceModelBreaches, ``, ""},
		{"snapshot service", config.ServiceSummary, `{"id":1,"x":"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := KeyFromHead(tc.service, []byte(tc.head))
			if got != tc.want || ok != (tc.want != "") {
				t.Fatalf("KeyFromHead(%s, %s) = %q, %v; want %q", tc.service, tc.head, got, ok, tc.want)
			}
		})
	}
}
