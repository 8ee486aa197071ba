package darktracetest

import (
	"bytes"
	"embed"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// samples are copies of the real (or guide) responses in /work/shared/darktrace-samples, used as
// templates for the generated data.
//
//go:embed testdata/*.json
var samples embed.FS

// hourMs is one generation bucket, in milliseconds.
const hourMs = int64(time.Hour / time.Millisecond)

// maxPerHour caps the events generated per service and hour, so ids (hour·10⁶ + index) stay
// unique.
const maxPerHour = 999_999

// Generation knobs.
const (
	lateBreachPercent    = 8  // breaches created 5–60 minutes after their time
	ackPercent           = 10 // acknowledged breaches and AI Analyst events
	clearedPercent       = 12 // cleared antigena actions
	manualPercent        = 10 // manual antigena actions
	pinEveryHours        = 48 // about one pinned AI Analyst event per this many hours
	groupScoreStringPerc = 15 // AI Analyst groupScore as a string
	groupScoreNullPerc   = 5  // AI Analyst groupScore as null
)

// Template variables: a field whose value is the JSON string "@@name@@" in a template is
// replaced, per event, by the variable's JSON value.
const (
	vID = iota
	vTime
	vCreated
	vScore
	vAck
	vPinned
	vDid
	vIP
	vHost
	vDesc
	vComments
	vGroupScore
	vGID
	vPStart
	vPEnd
	vAction
	vLabel
	vManual
	vTriggerer
	vPbid
	vModel
	vModelUUID
	vExpires
	vCleared
	vActive
	vHistory
	vUpdated
	nVars
)

var varNames = map[string]int{
	"id": vID, "time": vTime, "created": vCreated, "score": vScore, "ack": vAck, "pinned": vPinned,
	"did": vDid, "ip": vIP, "host": vHost, "desc": vDesc, "comments": vComments,
	"groupScore": vGroupScore, "gid": vGID, "pstart": vPStart, "pend": vPEnd, "action": vAction,
	"label": vLabel, "manual": vManual, "triggerer": vTriggerer, "pbid": vPbid, "model": vModel,
	"modeluuid": vModelUUID, "expires": vExpires, "cleared": vCleared, "active": vActive,
	"history": vHistory, "updated": vUpdated,
}

func marker(name string) string { return "@@" + name + "@@" }

var markerRE = regexp.MustCompile(`"@@([A-Za-z]+)@@"`)

// tmpl is a compact JSON document split at its variables.
type tmpl struct {
	segs [][]byte // len(vars)+1 literal segments
	vars []int
}

// compile marshals v compactly and splits it at each marker.
func compile(v any) (*tmpl, error) {
	b, err := marshal(v)
	if err != nil {
		return nil, err
	}
	t := &tmpl{}
	last := 0
	for _, m := range markerRE.FindAllSubmatchIndex(b, -1) {
		code, ok := varNames[string(b[m[2]:m[3]])]
		if !ok {
			return nil, fmt.Errorf("unknown template variable %q", b[m[2]:m[3]])
		}
		t.segs = append(t.segs, b[last:m[0]])
		t.vars = append(t.vars, code)
		last = m[1]
	}
	t.segs = append(t.segs, b[last:])
	return t, nil
}

// render appends the document with vals substituted.
func (t *tmpl) render(dst []byte, vals *[nVars][]byte) []byte {
	for i, v := range t.vars {
		dst = append(dst, t.segs[i]...)
		dst = append(dst, vals[v]...)
	}
	return append(dst, t.segs[len(t.segs)-1]...)
}

// marshal encodes v as compact JSON without HTML escaping.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// decodeSample decodes an embedded sample, keeping numbers as written.
func decodeSample(name string) (any, error) {
	b, err := samples.ReadFile("testdata/" + name)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decoding sample %s: %w", name, err)
	}
	return v, nil
}

// templates are the compiled samples.
type templates struct {
	breach      *tmpl   // modelbreaches, full (then/now model, as the default API call)
	breachSmall *tmpl   // modelbreaches, trimmed, for small EventSize
	breachDesc  []byte  // JSON string of the padded description, without its closing quote
	breachBase  [2]int  // rendered size without padding: full, small
	incidents   []*tmpl // AI Analyst events, one per sample event
	action      *tmpl
	actionHist  *tmpl
	// actionUpd and actionHistUpd add "updated", for Untidiness.ActionLifecycle.
	actionUpd     *tmpl
	actionHistUpd *tmpl
}

// loadTemplates compiles the embedded samples into templates.
func loadTemplates() (*templates, error) {
	t := &templates{}
	// Model breaches: the [SEK] sample, default parameters.
	v, err := decodeSample("modelbreaches-sekoia.json")
	if err != nil {
		return nil, err
	}
	b := v.([]any)[0].(map[string]any)
	now := b["model"].(map[string]any)["now"].(map[string]any)
	desc, _ := marshal(now["description"])
	t.breachDesc = desc[:len(desc)-1]
	now["description"] = marker("desc")
	b["pbid"], b["time"], b["creationTime"] = marker("id"), marker("time"), marker("created")
	b["score"], b["commentCount"], b["acknowledged"] = marker("score"), marker("comments"), marker("ack")
	dev := b["device"].(map[string]any)
	dev["did"], dev["ip"], dev["hostname"] = marker("did"), marker("ip"), marker("host")
	dev["lastSeen"] = marker("time")
	for _, ip := range dev["ips"].([]any) {
		ip.(map[string]any)["ip"] = marker("ip")
	}
	for _, tc := range b["triggeredComponents"].([]any) {
		tc.(map[string]any)["time"] = marker("time")
	}
	if t.breach, err = compile(b); err != nil {
		return nil, err
	}
	small := map[string]any{}
	for k, v := range b {
		small[k] = v
	}
	smallModel := map[string]any{}
	for _, k := range []string{"name", "pid", "phid", "uuid", "priority", "category", "tags", "description", "version"} {
		smallModel[k] = now[k]
	}
	smallThen := maps.Clone(smallModel)
	smallThen["description"] = b["model"].(map[string]any)["then"].(map[string]any)["description"]
	small["model"] = map[string]any{"then": smallThen, "now": smallModel}
	tc := b["triggeredComponents"].([]any)[0].(map[string]any)
	small["triggeredComponents"] = []any{map[string]any{
		"time": tc["time"], "cbid": tc["cbid"], "cid": tc["cid"], "chid": tc["chid"], "size": tc["size"],
		"threshold": tc["threshold"], "interval": tc["interval"], "metric": tc["metric"],
	}}
	if t.breachSmall, err = compile(small); err != nil {
		return nil, err
	}

	// AI Analyst events: the [SEK] sample's 16 events and the [EL] one.
	var incidents []any
	for _, name := range []string{"aianalyst-incidentevents-sekoia.json", "aianalyst-incidentevents-elastic.json"} {
		v, err := decodeSample(name)
		if err != nil {
			return nil, err
		}
		incidents = append(incidents, v.([]any)...)
	}
	for _, e := range incidents {
		m := e.(map[string]any)
		m["id"], m["createdAt"], m["acknowledged"], m["pinned"] = marker("id"), marker("time"), marker("ack"), marker("pinned")
		m["groupScore"], m["currentGroup"], m["children"] = marker("groupScore"), marker("gid"), []any{marker("id")}
		m["periods"] = []any{map[string]any{"start": marker("pstart"), "end": marker("pend")}}
		tp, err := compile(m)
		if err != nil {
			return nil, err
		}
		t.incidents = append(t.incidents, tp)
	}

	// Antigena actions: the guide's examples.
	for _, name := range []string{"antigena-apiguide6-cleaned.json", "antigena-includehistory-apiguide6-cleaned.json"} {
		v, err := decodeSample(name)
		if err != nil {
			return nil, err
		}
		a := v.([]any)[0].(map[string]any)
		for k, name := range map[string]string{
			"codeid": "id", "did": "did", "ip": "ip", "action": "action", "label": "label", "manual": "manual",
			"triggerer": "triggerer", "score": "score", "pbid": "pbid", "model": "model", "modeluuid": "modeluuid",
			"start": "time", "expires": "expires", "active": "active", "cleared": "cleared",
		} {
			a[k] = marker(name)
		}
		plain, upd := &t.action, &t.actionUpd
		if _, ok := a["history"]; ok {
			a["history"] = marker("history")
			plain, upd = &t.actionHist, &t.actionHistUpd
		}
		if *plain, err = compile(a); err != nil {
			return nil, err
		}
		a["updated"] = marker("updated")
		if *upd, err = compile(a); err != nil {
			return nil, err
		}
	}

	var vals [nVars][]byte
	for i := range vals {
		vals[i] = []byte("0")
	}
	vals[vDesc] = append(slices.Clone(t.breachDesc), '"')
	vals[vIP] = []byte(`"10.0.0.1"`)
	vals[vHost] = []byte(`"ws-0001.corp.example.com"`)
	vals[vID] = []byte("480000000001")
	vals[vTime] = []byte("1700000000000")
	vals[vCreated] = vals[vTime]
	t.breachBase[0] = len(t.breach.render(nil, &vals))
	t.breachBase[1] = len(t.breachSmall.render(nil, &vals))
	return t, nil
}

// Service indexes, for seeding.
var serviceIndex = map[string]uint64{
	config.ServiceAntigena:       1,
	config.ServiceIncidentEvents: 2,
	config.ServiceSummary:        3,
	config.ServiceStatus:         4,
	config.ServiceModelBreaches:  5,
}

// rec is one generated event's metadata; rendering it gives the event's JSON.
type rec struct {
	id       int64 // pbid, codeid, or index for AI Analyst
	uuid     [16]byte
	t        int64 // event time (time, createdAt, start), epoch ms
	created  int64 // when it becomes visible (creationTime), epoch ms
	expires  int64
	aux      int64
	score    float64
	gs       float64
	did      int
	variant  int
	gsKind   int // 0 number, 1 string, 2 null
	comments int
	// Antigena lifecycle (Untidiness.ActionLifecycle); zero when there is none.
	extendAt   int64 // when the action was extended to newExpires
	newExpires int64
	clearAt    int64 // when it was cleared
	ack        bool
	pinned     bool
	cleared    bool
	manual     bool
}

// mix hashes its parts into a 64-bit seed.
func mix(parts ...uint64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint64(b[:], p)
		h.Write(b[:])
	}
	return h.Sum64()
}

// poisson draws a Poisson-distributed count with the given mean.
func poisson(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean > 50 {
		n := math.Round(mean + math.Sqrt(mean)*rng.NormFloat64())
		return int(max(n, 0))
	}
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// genHour generates every event of service whose event time falls in hour h (epoch hours),
// sorted by event time. It depends only on the seed, the service, h and the service's rate.
func (h *Handler) genHour(service string, hour int64) []rec {
	rate := h.opts.EventsPerHour[service]
	if rate <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(h.opts.Seed), mix(serviceIndex[service], uint64(hour))))
	n := min(poisson(rng, rate), maxPerHour)
	if n == 0 {
		return nil
	}
	offs := make([]int64, n)
	for i := range offs {
		offs[i] = rng.Int64N(hourMs)
	}
	slices.Sort(offs)
	recs := make([]rec, n)
	for i := range recs {
		r := &recs[i]
		r.id = hour*1_000_000 + int64(i) + 1
		r.t = hour*hourMs + offs[i]
		r.created = r.t
		r.did = 1 + rng.IntN(4000)
		r.score = float64(rng.IntN(1000)) / 1000
		switch service {
		case config.ServiceModelBreaches:
			if rng.IntN(100) < lateBreachPercent {
				r.created = r.t + int64(5*time.Minute/time.Millisecond) + rng.Int64N(int64(55*time.Minute/time.Millisecond))
			} else {
				r.created = r.t + 1000 + rng.Int64N(9000)
			}
			r.ack = rng.IntN(100) < ackPercent
			r.comments = rng.IntN(3)
		case config.ServiceIncidentEvents:
			binary.LittleEndian.PutUint64(r.uuid[:8], rng.Uint64())
			binary.LittleEndian.PutUint64(r.uuid[8:], rng.Uint64())
			r.uuid[6] = r.uuid[6]&0x0f | 0x40
			r.uuid[8] = r.uuid[8]&0x3f | 0x80
			r.variant = rng.IntN(len(h.tpl.incidents))
			r.ack = rng.IntN(100) < ackPercent
			r.gs = rng.Float64() * 100
			switch p := rng.IntN(100); {
			case p < groupScoreNullPerc:
				r.gsKind = 2
			case p < groupScoreNullPerc+groupScoreStringPerc:
				r.gsKind = 1
			}
			r.aux = 1000 + rng.Int64N(int64(30*time.Minute/time.Millisecond)) // period length
			r.score = float64(rng.IntN(1000)) / 10
		case config.ServiceAntigena:
			r.variant = rng.IntN(len(actionKinds))
			r.manual = rng.IntN(100) < manualPercent
			r.cleared = rng.IntN(100) < clearedPercent
			r.expires = r.t + []int64{1, 2, 4, 24}[rng.IntN(4)]*hourMs
			r.aux = int64(rng.IntN(len(models)))
			if r.manual {
				r.score = 0
			}
		}
	}
	h.untidy(service, hour, recs)
	if service == config.ServiceIncidentEvents && h.pinHour(hour) {
		recs[0].pinned = true
	}
	if service == config.ServiceIncidentEvents {
		// The appliance does not sort AI Analyst events.
		rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	}
	return recs
}

// pinHour reports whether the first AI Analyst event of hour h is pinned.
func (h *Handler) pinHour(hour int64) bool {
	return mix(uint64(h.opts.Seed), 0x7069, uint64(hour))%pinEveryHours == 0
}

// actionKinds are the Antigena action types and their labels.
var actionKinds = [][2]string{
	{"quarantine", "Quarantine device"},
	{"connection", "Block matching connections"},
	{"pol", "Enforce pattern of life"},
	{"gpol", "Enforce group pattern of life"},
	{"quarantineOutgoing", "Block all outgoing traffic"},
	{"quarantineIncoming", "Block all incoming traffic"},
}

// models are model names used by Antigena actions.
var models = []string{
	"Antigena / Network / External Threat / Antigena Quarantine Example",
	"Antigena / Network / Significant Anomaly / Antigena Breaches Over Time Block",
	"Antigena / Network / Insider Threat / Antigena Large Data Volume Outbound Block",
	"Antigena / Network / External Threat / Antigena Suspicious File Block",
}

// renderer renders events, reusing its buffers; it is not safe for concurrent use.
type renderer struct {
	h    *Handler
	now  int64 // the appliance's clock, epoch ms: an Antigena action is rendered as it is then
	vals [nVars][]byte
	buf  []byte
}

func appendBool(dst []byte, b bool) []byte { return strconv.AppendBool(dst, b) }

func ipOf(did int) string { return fmt.Sprintf("10.%d.%d.%d", 20+did>>16, did>>8&0xff, did&0xff) }

func hostOf(did int) string { return fmt.Sprintf("ws-%04d.corp.example.com", did) }

func appendQuoted(dst []byte, s string) []byte { return strconv.AppendQuote(dst, s) }

func (rd *renderer) set(v int, b []byte) { rd.vals[v] = b }

// device sets the device variables.
func (rd *renderer) device(did int) {
	rd.vals[vDid] = strconv.AppendInt(rd.vals[vDid][:0], int64(did), 10)
	rd.vals[vIP] = appendQuoted(rd.vals[vIP][:0], ipOf(did))
	rd.vals[vHost] = appendQuoted(rd.vals[vHost][:0], hostOf(did))
}

// render returns the JSON of r for service; the slice is valid until the next call.
func (rd *renderer) render(service string, r *rec, history bool) []byte {
	v := &rd.vals
	rd.device(r.did)
	v[vID] = strconv.AppendInt(v[vID][:0], r.id, 10)
	v[vTime] = strconv.AppendInt(v[vTime][:0], r.t, 10)
	v[vAck] = appendBool(v[vAck][:0], r.ack)
	switch service {
	case config.ServiceModelBreaches:
		v[vCreated] = strconv.AppendInt(v[vCreated][:0], r.created, 10)
		v[vScore] = strconv.AppendFloat(v[vScore][:0], r.score, 'f', -1, 64)
		v[vComments] = strconv.AppendInt(v[vComments][:0], int64(r.comments), 10)
		t, base := rd.h.tpl.breach, rd.h.tpl.breachBase[0]
		if size := rd.h.opts.EventSize; size > 0 && size < base {
			t, base = rd.h.tpl.breachSmall, rd.h.tpl.breachBase[1]
		}
		v[vDesc] = append(v[vDesc][:0], rd.h.tpl.breachDesc...)
		if pad := rd.h.opts.EventSize - base - 1; pad > 0 {
			v[vDesc] = append(v[vDesc], ' ')
			// Pseudo-random letters and spaces, not a repeating cycle: padding that compresses
			// far better than real event JSON would flatter every figure measured with it.
			x := uint64(r.id)*0x9E3779B97F4A7C15 | 1
			for i := 1; i < pad; i++ {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				if c := byte(x % 32); c < 26 {
					v[vDesc] = append(v[vDesc], 'a'+c)
				} else {
					v[vDesc] = append(v[vDesc], ' ')
				}
			}
		}
		v[vDesc] = append(v[vDesc], '"')
		rd.buf = t.render(rd.buf[:0], v)
	case config.ServiceIncidentEvents:
		id := uuidString(r.uuid)
		v[vID] = appendQuoted(v[vID][:0], id)
		v[vGID] = appendQuoted(v[vGID][:0], "g"+id)
		v[vPinned] = appendBool(v[vPinned][:0], r.pinned)
		switch r.gsKind {
		case 0:
			v[vGroupScore] = strconv.AppendFloat(v[vGroupScore][:0], r.gs, 'f', -1, 64)
		case 1:
			v[vGroupScore] = appendQuoted(v[vGroupScore][:0], strconv.FormatFloat(r.gs, 'f', 7, 64))
		default:
			v[vGroupScore] = append(v[vGroupScore][:0], "null"...)
		}
		v[vPStart] = strconv.AppendInt(v[vPStart][:0], r.t-r.aux-1000, 10)
		v[vPEnd] = strconv.AppendInt(v[vPEnd][:0], r.t-1000, 10)
		rd.buf = rd.h.tpl.incidents[r.variant].render(rd.buf[:0], v)
	case config.ServiceAntigena:
		kind := actionKinds[r.variant]
		v[vAction] = appendQuoted(v[vAction][:0], kind[0])
		v[vLabel] = appendQuoted(v[vLabel][:0], kind[1])
		v[vManual] = appendBool(v[vManual][:0], r.manual)
		life := rd.h.opts.Untidy.ActionLifecycle
		cur := rd.h.current(r, rd.now)
		v[vExpires] = strconv.AppendInt(v[vExpires][:0], cur.expires, 10)
		v[vCleared] = appendBool(v[vCleared][:0], cur.state == StateCleared)
		v[vUpdated] = strconv.AppendQuote(v[vUpdated][:0], strconv.FormatInt(cur.at, 10))
		v[vActive] = append(v[vActive][:0], "true"...)
		if r.manual {
			v[vTriggerer] = fmt.Appendf(v[vTriggerer][:0], `{"username":"analyst%d","reason":""}`, r.did%7)
			v[vScore] = append(v[vScore][:0], "0.0"...)
			v[vPbid] = append(v[vPbid][:0], '0')
			v[vModel] = append(v[vModel][:0], `""`...)
			v[vModelUUID] = append(v[vModelUUID][:0], `""`...)
		} else {
			v[vTriggerer] = append(v[vTriggerer][:0], "null"...)
			v[vScore] = strconv.AppendFloat(v[vScore][:0], r.score, 'f', -1, 64)
			v[vPbid] = strconv.AppendInt(v[vPbid][:0], r.id-7, 10)
			v[vModel] = appendQuoted(v[vModel][:0], models[r.aux])
			v[vModelUUID] = appendQuoted(v[vModelUUID][:0], fmt.Sprintf("d92d6f73-0c1b-4c96-84a8-%012x", r.aux+1))
		}
		t := rd.h.tpl.action
		if life {
			t = rd.h.tpl.actionUpd
		}
		if history {
			t = rd.h.tpl.actionHist
			if life {
				t = rd.h.tpl.actionHistUpd
			}
			creator := map[bool]string{true: fmt.Sprintf("analyst%d", r.did%7), false: "Antigena"}[r.manual]
			hist := fmt.Appendf(v[vHistory][:0], `[{"family":"NETWORK","username":%q,"action":"created","reason":"","time":%d}`, creator, r.t)
			switch {
			case life:
				for _, tr := range rd.h.transitions(r, rd.now)[1:] {
					user := "Antigena"
					if tr.state == StateCleared {
						user = fmt.Sprintf("analyst%d", r.did%7)
					}
					hist = fmt.Appendf(hist, `,{"family":"NETWORK","username":%q,"action":%q,"reason":"","time":%d}`, user, tr.state, tr.at)
				}
			case r.cleared:
				hist = fmt.Appendf(hist, `,{"family":"NETWORK","username":"analyst%d","action":"cleared","reason":"","time":%d}`, r.did%7, r.t+(r.expires-r.t)/2)
			}
			v[vHistory] = append(hist, ']')
		}
		rd.buf = t.render(rd.buf[:0], v)
	}
	return rd.buf
}

// uuidString formats 16 bytes as a UUID.
func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
