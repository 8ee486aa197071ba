package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// addSampleSeeds adds every testdata response body, and a few small bodies, to f's corpus.
func addSampleSeeds(f *testing.F, extra ...string) {
	f.Helper()
	files, err := filepath.Glob("testdata/*/response.json")
	if err != nil || len(files) == 0 {
		f.Fatalf("no samples: %v", err)
	}
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

// tooDeep reports whether data may nest beyond the depth where Split and encoding/json differ.
func tooDeep(data []byte) bool {
	return bytes.Count(data, []byte("[")) > jsonscan.MaxDepth-10 || bytes.Count(data, []byte("{")) > jsonscan.MaxDepth-10
}

// ordered is a JSON object decoded with its members in order and duplicates kept.
type ordered []orderedMember

type orderedMember struct {
	key string
	val any
}

// decodeOrdered decodes one value from dec, keeping objects' member order (numbers as
// json.Number).
func decodeOrdered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		obj := ordered{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			obj = append(obj, orderedMember{key: k.(string), val: v})
		}
		_, err := dec.Token()
		return obj, err
	case json.Delim('['):
		arr := []any{}
		for dec.More() {
			v, err := decodeOrdered(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.Token()
		return arr, err
	default:
		return tok, nil
	}
}

func parseOrdered(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeOrdered(dec)
	if err != nil {
		t.Fatalf("decoding %q: %v", data, err)
	}
	return v
}

// FuzzFlatten checks status processing on arbitrary bodies: no panics; valid JSON always gives
// valid compact events under st:<poll>:<node> keys; an unflattened snapshot is the input,
// compacted; a flattened one has one event per instance and probe (counted independently with
// encoding/json), each starting with the top-level fields minus instances and probes and ending
// with instance_info and/or probe_info.
func FuzzFlatten(f *testing.F) {
	addSampleSeeds(f, `{}`, `{"probes":{"1":{}}}`, `{"a":1,"instances":{"1":{"probes":{"2":{"id":null}}},"x":"y"},"probes":{"p":3}}`,
		`{"instances":{"1":{"probes":[1]}},"probes":{}}`, `{"probes":{"1":{}},"probes":{"2":{}}}`, `[1]`)
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		prefix := "st:" + strconv.FormatInt(testPollMs, 10) + ":"
		for _, flatten := range []bool{false, true} {
			p, err := NewProcessor(Options{Service: config.ServiceStatus, Flatten: flatten})
			if err != nil {
				t.Fatal(err)
			}
			var evs []Event
			err = p.Process(data, testPoll, func(ev Event) error {
				evs = append(evs, ev)
				return nil
			})
			valid := json.Valid(data)
			if valid != (err == nil) {
				t.Fatalf("flatten %v: json.Valid = %v but Process error = %v", flatten, valid, err)
			}
			if err != nil {
				if !errors.Is(err, jsonscan.ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				continue
			}
			for _, ev := range evs {
				var buf bytes.Buffer
				if err := json.Compact(&buf, ev.Data); err != nil || buf.String() != string(ev.Data) {
					t.Fatalf("event %q: data %q is not compact valid JSON (%v)", ev.Key, ev.Data, err)
				}
				if !strings.HasPrefix(ev.Key, prefix) || ev.Time != testPollMs {
					t.Fatalf("event key %q time %d", ev.Key, ev.Time)
				}
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, data); err != nil {
				t.Fatal(err)
			}
			root := parseOrdered(t, data)
			wantNodes := countStatusNodes(root)
			if !flatten || wantNodes == 0 {
				if len(evs) != 1 || evs[0].Key != prefix+"master" || string(evs[0].Data) != compact.String() {
					t.Fatalf("flatten %v: got %d events (%v), want the whole snapshot as master", flatten, len(evs), evs)
				}
				continue
			}
			if len(evs) != wantNodes {
				t.Fatalf("got %d events, want %d", len(evs), wantNodes)
			}
			var base ordered
			for _, m := range root.(ordered) {
				if m.key != "instances" && m.key != "probes" {
					base = append(base, m)
				}
			}
			for _, ev := range evs {
				obj, ok := parseOrdered(t, ev.Data).(ordered)
				if !ok || len(obj) < len(base)+1 {
					t.Fatalf("event %q: %s is too short", ev.Key, ev.Data)
				}
				for i := range base {
					if obj[i].key != base[i].key {
						t.Fatalf("event %q: member %d is %q, want %q", ev.Key, i, obj[i].key, base[i].key)
					}
				}
				tail := obj[len(base):]
				last := tail[len(tail)-1].key
				if last != "instance_info" && last != "probe_info" || len(tail) > 2 {
					t.Fatalf("event %q: unexpected tail %v", ev.Key, tail)
				}
			}
		}
	})
}

// countStatusNodes counts the events a flattened snapshot should give: every member of every
// object-valued top-level "instances" and "probes", and every member of every object-valued
// "probes" of an object-valued instance.
func countStatusNodes(root any) int {
	obj, ok := root.(ordered)
	if !ok {
		return 0
	}
	n := 0
	for _, m := range obj {
		children, ok := m.val.(ordered)
		if !ok {
			continue
		}
		switch m.key {
		case "probes":
			n += len(children)
		case "instances":
			for _, inst := range children {
				n++
				if io, ok := inst.val.(ordered); ok {
					for _, im := range io {
						if probes, ok := im.val.(ordered); ok && im.key == "probes" {
							n += len(probes)
						}
					}
				}
			}
		}
	}
	return n
}

// FuzzProcess checks the key and time scanner of the windowed services against encoding/json:
// no panics, every valid event is emitted once, with the key of its first key member when that
// is usable and a fallback key otherwise, and its data compacted.
func FuzzProcess(f *testing.F) {
	f.Add([]byte(`{"pbid":1,"time":2,"id":"x","createdAt":3,"codeid":4,"start":5}`))
	f.Add([]byte(`{"a":{"pbid":9},"pbid":"12","id":"a\"b","codeid":-1,"start":"7","updated":8}`))
	f.Add([]byte(`[{"pbid":1}]`))
	for _, name := range []string{"modelbreaches-sekoia", "aianalyst-incidentevents-elastic", "antigena-apiguide6-cleaned"} {
		body, err := os.ReadFile(filepath.Join("testdata", name, "response.json"))
		if err != nil {
			f.Fatal(err)
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(raws[0]))
	}
	services := []struct {
		name, keyField, prefix string
	}{
		{config.ServiceModelBreaches, "pbid", "mb:"},
		{config.ServiceIncidentEvents, "id", "ai:"},
		{config.ServiceAntigena, "codeid", "ag:"},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		for _, svc := range services {
			p, err := NewProcessor(Options{Service: svc.name})
			if err != nil {
				t.Fatal(err)
			}
			var evs []Event
			err = p.Process(data, testPoll, func(ev Event) error {
				evs = append(evs, ev)
				return nil
			})
			if json.Valid(data) != (err == nil) {
				t.Fatalf("%s: json.Valid = %v but Process error = %v", svc.name, json.Valid(data), err)
			}
			if err != nil {
				continue
			}
			if len(evs) != 1 {
				t.Fatalf("%s: %d events", svc.name, len(evs))
			}
			// The worker's way, with the fields found while splitting, gives the same event.
			var found []Event
			body := append(append([]byte("["), data...), ']')
			err = jsonscan.SplitLookup(bytes.NewReader(body), jsonscan.ShapeArray, p.Fields(), func(raw []byte, vals [][]byte) error {
				return p.ProcessFound(raw, vals, testPoll, func(ev Event) error {
					found = append(found, ev)
					return nil
				})
			})
			if err != nil || len(found) != 1 || found[0].Key != evs[0].Key || found[0].Time != evs[0].Time || !bytes.Equal(found[0].Data, evs[0].Data) {
				t.Fatalf("%s: SplitLookup and ProcessFound give %+v, %v; Process %+v", svc.name, found, err, evs)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, data); err != nil {
				t.Fatal(err)
			}
			if string(evs[0].Data) != compact.String() {
				t.Fatalf("%s: data %q, want %q", svc.name, evs[0].Data, compact.Bytes())
			}
			key := evs[0].Key
			if !strings.HasPrefix(key, svc.prefix) {
				t.Fatalf("%s: key %q lacks prefix %q", svc.name, key, svc.prefix)
			}
			fallback := FallbackKey(svc.name, data)
			obj, _ := parseOrdered(t, data).(ordered)
			var idVal any
			for _, m := range obj {
				if m.key == svc.keyField {
					idVal = m.val
					break
				}
			}
			var wantID string
			switch v := idVal.(type) {
			case json.Number:
				if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
					wantID = strconv.FormatInt(n, 10)
				}
			case string:
				if svc.name == config.ServiceIncidentEvents {
					if id, ok := parseTextID(quoteForTest(v)); ok {
						wantID = id
					}
				} else if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					wantID = strconv.FormatInt(n, 10)
				}
			}
			switch {
			case wantID == "" && key != fallback:
				t.Fatalf("%s: key %q, want fallback %q", svc.name, key, fallback)
			case wantID != "" && svc.name != config.ServiceAntigena && key != svc.prefix+wantID:
				t.Fatalf("%s: key %q, want %q", svc.name, key, svc.prefix+wantID)
			case wantID != "" && svc.name == config.ServiceAntigena && !strings.HasPrefix(key, svc.prefix+wantID+":"):
				t.Fatalf("%s: key %q, want prefix %q", svc.name, key, svc.prefix+wantID+":")
			}
		}
	})
}
