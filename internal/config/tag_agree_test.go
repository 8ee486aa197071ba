package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// TestTagValidatorsAgree checks that the configuration and the Devo line encoder accept exactly the
// same tags: a tag the configuration accepts but the encoder refuses would stall its lane forever
// (every Send fails with ErrInvalidTag), and one the encoder accepts but the configuration refuses
// is a needless error. Each tag goes through the real configuration path (override_devo_tag, set
// through an environment variable so that any byte string reaches it) and through the check every
// Send makes.
func TestTagValidatorsAgree(t *testing.T) {
	t.Parallel()
	const doc = `
outputs:
  console_1: {type: console}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, instance: https://dt.example.com}
    services:
      modelbreaches:
        override_devo_tag: ${TAG}
`
	tests := []struct {
		tag    string
		wantOK bool
	}{
		{"edr.darktrace.respond.model_breach", true},
		{"my.app", true},
		{"a.b.c.d.e.f", true},
		{"web.apache.access-lt", true},
		{"my.app.dt_breach", true},
		{"my.app.café", true},
		{"my.app.日本", true},
		{"my.app." + strings.Repeat("x", 1017), true},
		{"my.app." + strings.Repeat("x", 1018), false},
		{"single", false},
		{"a.b.c.d.e.f.g", false},
		{"my..app", false},
		{".my.app", false},
		{"my.app.", false},
		{".", false},
		{"my.app test", false},
		{"my.app\ttest", false},
		{"my.app\ntest", false},
		{"my.app\rtest", false},
		{"my.app:x", false},
		{"my.app\x00", false},
		{"my.app\x7f", false},
		{"my.app\u0080x", false}, // C1 control
		{"my.app\u0085x", false}, // NEL
		{"my.app\u00a0x", false}, // NBSP
		{"my.app\u1680x", false},
		{"my.app\u2003x", false}, // em space: the configuration used to accept it
		{"my.app\u2028x", false},
		{"my.app\u202fx", false},
		{"my.app\u3000x", false},
		{"my.app\ufeffx", false}, // BOM
		{"my.app\xffx", false},   // invalid UTF-8: the configuration used to accept it
		{"my.app\xc3", false},
	}
	for _, tt := range tests {
		encErr := devo.ValidateTag(tt.tag)
		env := func(k string) (string, bool) {
			if k == "TAG" {
				return tt.tag, true
			}
			return "", false
		}
		cfg, cfgErr := config.Parse([]byte(doc), config.LoadOptions{LookupEnv: env,
			Now: func() time.Time { return time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) }, BaseDir: "/etc/dtfleet"})
		if (encErr == nil) != tt.wantOK {
			t.Errorf("devo.ValidateTag(%.40q) = %v; want ok=%v", tt.tag, encErr, tt.wantOK)
		}
		if (cfgErr == nil) != tt.wantOK {
			t.Errorf("config with override_devo_tag %.40q: error %v; want ok=%v", tt.tag, cfgErr, tt.wantOK)
		}
		if cfgErr != nil && !strings.Contains(cfgErr.Error(), "override_devo_tag") {
			t.Errorf("config with override_devo_tag %.40q failed for another reason: %v", tt.tag, cfgErr)
		}
		if cfgErr == nil {
			if got := cfg.Inputs["darktrace"].Services[config.ServiceModelBreaches].Tag; got != tt.tag {
				t.Errorf("config with override_devo_tag %.40q: the lane's tag is %.40q", tt.tag, got)
			}
		}
	}
}
