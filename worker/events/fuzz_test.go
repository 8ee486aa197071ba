package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/internal/config"
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
	return bytes.Count(data, []byte("[")) > maxDepth-10 || bytes.Count(data, []byte("{")) > maxDepth-10
}

// FuzzSplit checks that Split never panics, that everything it yields is compact valid JSON, that
// it accepts exactly the bodies encoding/json accepts (of the right shape) with the same elements,
// and that it splits arrays produced by encoding/json into exactly their compacted elements.
func FuzzSplit(f *testing.F) {
	addSampleSeeds(f, `[]`, `null`, `[1,"a\"b",{"c":[true,false,null]}]`, `{"actions":[{"codeid":1}],"devices":[]}`,
		"\xEF\xBB\xBF[]", `[1e5, -0.0, "\u00e9"]`, `<html>`, `[{"a":1},`, `[1] 2`)
	f.Fuzz(func(t *testing.T, data []byte) {
		if tooDeep(data) {
			return
		}
		for _, shape := range []Shape{ShapeArray, ShapeActions, ShapeObject} {
			got, err := splitAll(bytes.NewReader(data), shape)
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("shape %v: error %v does not wrap ErrMalformed", shape, err)
			}
			for _, raw := range got {
				var buf bytes.Buffer
				if err := json.Compact(&buf, []byte(raw)); err != nil {
					t.Fatalf("shape %v: yielded invalid JSON %q: %v", shape, raw, err)
				}
				if buf.String() != raw {
					t.Fatalf("shape %v: yielded %q, not compact (%q)", shape, raw, buf.String())
				}
			}
			want, ok := referenceElements(data, shape)
			switch {
			case !ok && err == nil:
				t.Fatalf("shape %v: Split accepted %q, encoding/json does not", shape, data)
			case ok && err != nil:
				t.Fatalf("shape %v: Split rejected %q: %v", shape, data, err)
			case ok && strings.Join(got, "\x00") != strings.Join(want, "\x00"):
				t.Fatalf("shape %v: Split(%q) = %q, want %q", shape, data, got, want)
			}
			// The same with one-byte reads.
			again, err2 := splitAll(iotestOneByte(data), shape)
			if (err == nil) != (err2 == nil) || strings.Join(got, "\x00") != strings.Join(again, "\x00") {
				t.Fatalf("shape %v: one-byte reads give %q, %v; whole reads %q, %v", shape, again, err2, got, err)
			}
		}

		// Arrays produced by encoding/json split into exactly their compacted elements.
		var v any
		if json.Unmarshal(data, &v) != nil {
			return
		}
		elem, err := json.Marshal(v)
		if err != nil {
			return
		}
		body, err := json.MarshalIndent([]any{v, "x", v}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got, err := splitAll(bytes.NewReader(body), ShapeArray)
		if err != nil {
			t.Fatalf("Split(%s): %v", body, err)
		}
		if want := []string{string(elem), `"x"`, string(elem)}; strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("Split(%s) = %q, want %q", body, got, want)
		}
	})
}

func iotestOneByte(data []byte) io.Reader {
	return &oneByteReader{data: data}
}

// oneByteReader returns one byte per Read.
type oneByteReader struct{ data []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[0]
	r.data = r.data[1:]
	return 1, nil
}

// referenceElements is what Split should yield for data and shape, computed with encoding/json;
// ok is false when Split should fail.
func referenceElements(data []byte, shape Shape) ([]string, bool) {
	data = bytes.TrimPrefix(data, []byte("\xEF\xBB\xBF"))
	if !json.Valid(data) {
		return nil, false
	}
	trimmed := bytes.TrimSpace(data)
	compactEach := func(raws []json.RawMessage) ([]string, bool) {
		out := make([]string, 0, len(raws))
		for _, raw := range raws {
			var buf bytes.Buffer
			if json.Compact(&buf, raw) != nil {
				return nil, false
			}
			out = append(out, buf.String())
		}
		return out, true
	}
	switch {
	case shape == ShapeObject && len(trimmed) > 0 && trimmed[0] == '{':
		return compactEach([]json.RawMessage{trimmed})
	case shape == ShapeObject:
		return nil, false
	case string(trimmed) == "null":
		return nil, true
	case trimmed[0] == '[':
		var raws []json.RawMessage
		if json.Unmarshal(trimmed, &raws) != nil {
			return nil, false
		}
		return compactEach(raws)
	case shape == ShapeActions && trimmed[0] == '{':
		// Every "actions" member, in order, must be an array or null.
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		if _, err := dec.Token(); err != nil {
			return nil, false
		}
		var out []string
		found := false
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, false
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, false
			}
			if tok != "actions" {
				continue
			}
			found = true
			var raws []json.RawMessage
			if string(raw) != "null" && (raw[0] != '[' || json.Unmarshal(raw, &raws) != nil) {
				return nil, false
			}
			els, ok := compactEach(raws)
			if !ok {
				return nil, false
			}
			out = append(out, els...)
		}
		return out, found
	default:
		return nil, false
	}
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
				if !errors.Is(err, ErrMalformed) {
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
