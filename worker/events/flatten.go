package events

import "github.com/dtfleet/dtfleet/internal/jsonscan"

// Names of the /status members that flattening splits out, and of the members it adds.
const (
	statusInstances = "instances"
	statusProbes    = "probes"
	keyInstanceInfo = `"instance_info"`
	keyProbeInfo    = `"probe_info"`
	keyID           = `"id"`
)

// statusNode is one event of a flattened /status snapshot: its node name (for the dedupe key) and
// its contents.
type statusNode struct {
	name string
	ev   jsonscan.Node
}

// flattenStatus splits a /status snapshot into one event per node, the Devo collector's
// "flattening preprocessing" done for every node instead of only the last one:
//
//   - each instances[k] (Unified View) becomes {top-level fields..., "instance_info": instance}
//     with node name "instance:<k>", where instance is the instance's object without its nested
//     "probes";
//   - each probe p nested under instances[k] becomes {top-level fields..., "instance_info":
//     instance, "probe_info": probe} with node name "instance:<k>:probe:<p>", right after its
//     instance's event;
//   - each top-level probes[p] becomes {top-level fields..., "probe_info": probe} with node name
//     "probe:<p>".
//
// The top-level fields are every member of the snapshot except "instances" and "probes", in
// their original order. Nodes come in the order of the body. An instance or probe object with
// no "id" (or a null one) gets "id" prepended, set to its map Key: a number when the key is a
// JSON integer, else the key string. A member "instances" or "probes" whose value is not an object
// contributes no nodes. A snapshot with no instance and no probe, or that is not an object,
// is one event, unchanged, with node name "master".
func flattenStatus(root *jsonscan.Node) []statusNode {
	if root.Kind != jsonscan.KindObject {
		return []statusNode{{name: "master", ev: *root}}
	}
	base := make([]jsonscan.Member, 0, len(root.Members))
	for _, m := range root.Members {
		if !jsonscan.KeyIs(m.Key, statusInstances) && !jsonscan.KeyIs(m.Key, statusProbes) {
			base = append(base, m)
		}
	}
	var out []statusNode
	for _, m := range root.Members {
		switch {
		case jsonscan.KeyIs(m.Key, statusInstances) && m.Val.Kind == jsonscan.KindObject:
			for _, inst := range m.Val.Members {
				k := keyName(inst.Key)
				info, probes := splitInstance(inst)
				out = append(out, statusNode{
					name: "instance:" + k,
					ev:   withInfo(base, jsonscan.Member{Key: []byte(keyInstanceInfo), Val: info}),
				})
				for _, pm := range probes {
					for _, probe := range pm.Val.Members {
						out = append(out, statusNode{
							name: "instance:" + k + ":probe:" + keyName(probe.Key),
							ev: withInfo(base,
								jsonscan.Member{Key: []byte(keyInstanceInfo), Val: info},
								jsonscan.Member{Key: []byte(keyProbeInfo), Val: withID(probe)}),
						})
					}
				}
			}
		case jsonscan.KeyIs(m.Key, statusProbes) && m.Val.Kind == jsonscan.KindObject:
			for _, probe := range m.Val.Members {
				out = append(out, statusNode{
					name: "probe:" + keyName(probe.Key),
					ev:   withInfo(base, jsonscan.Member{Key: []byte(keyProbeInfo), Val: withID(probe)}),
				})
			}
		}
	}
	if len(out) == 0 {
		return []statusNode{{name: "master", ev: *root}}
	}
	return out
}

// splitInstance returns an instance's info (its object without "probes", with an id) and its
// "probes" members whose values are objects.
func splitInstance(inst jsonscan.Member) (jsonscan.Node, []jsonscan.Member) {
	if inst.Val.Kind != jsonscan.KindObject {
		return inst.Val, nil
	}
	var probes []jsonscan.Member
	kept := make([]jsonscan.Member, 0, len(inst.Val.Members))
	for _, m := range inst.Val.Members {
		if jsonscan.KeyIs(m.Key, statusProbes) {
			if m.Val.Kind == jsonscan.KindObject {
				probes = append(probes, m)
			}
			continue
		}
		kept = append(kept, m)
	}
	return withID(jsonscan.Member{Key: inst.Key, Val: jsonscan.Node{Kind: jsonscan.KindObject, Members: kept}}), probes
}

// withInfo returns an object of the base members followed by infos.
func withInfo(base []jsonscan.Member, infos ...jsonscan.Member) jsonscan.Node {
	ms := make([]jsonscan.Member, 0, len(base)+len(infos))
	ms = append(ms, base...)
	ms = append(ms, infos...)
	return jsonscan.Node{Kind: jsonscan.KindObject, Members: ms}
}

// isJSONInt reports whether s is a JSON integer literal: -?(0|[1-9][0-9]*).
func isJSONInt(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	if s == "" || s[0] == '0' && len(s) > 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// withID returns m's value with "id" set from m's key when the value is an object without a
// non-null "id".
func withID(m jsonscan.Member) jsonscan.Node {
	v := m.Val
	if v.Kind != jsonscan.KindObject {
		return v
	}
	if id := v.Get("id"); id != nil && !id.IsNull() {
		return v
	}
	var idVal jsonscan.Node
	if k := keyName(m.Key); isJSONInt(k) {
		idVal = jsonscan.Node{Raw: []byte(k)}
	} else {
		idVal = jsonscan.Node{Raw: m.Key}
	}
	ms := make([]jsonscan.Member, 0, len(v.Members)+1)
	ms = append(ms, jsonscan.Member{Key: []byte(keyID), Val: idVal})
	for _, old := range v.Members {
		if !jsonscan.KeyIs(old.Key, "id") {
			ms = append(ms, old)
		}
	}
	return jsonscan.Node{Kind: jsonscan.KindObject, Members: ms}
}

// keyName decodes a member's key token.
func keyName(key []byte) string {
	s, ok := jsonscan.Unquote(key)
	if !ok {
		return string(key)
	}
	return s
}
