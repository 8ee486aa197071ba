package events

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
	ev   node
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
// no "id" (or a null one) gets "id" prepended, set to its map key: a number when the key is a
// JSON integer, else the key string. A member "instances" or "probes" whose value is not an object
// contributes no nodes. A snapshot with no instance and no probe, or that is not an object,
// is one event, unchanged, with node name "master".
func flattenStatus(root *node) []statusNode {
	if root.kind != '{' {
		return []statusNode{{name: "master", ev: *root}}
	}
	base := make([]member, 0, len(root.members))
	for _, m := range root.members {
		if !keyIs(m.key, statusInstances) && !keyIs(m.key, statusProbes) {
			base = append(base, m)
		}
	}
	var out []statusNode
	for _, m := range root.members {
		switch {
		case keyIs(m.key, statusInstances) && m.val.kind == '{':
			for _, inst := range m.val.members {
				k := keyName(inst.key)
				info, probes := splitInstance(inst)
				out = append(out, statusNode{
					name: "instance:" + k,
					ev:   withInfo(base, member{key: []byte(keyInstanceInfo), val: info}),
				})
				for _, pm := range probes {
					for _, probe := range pm.val.members {
						out = append(out, statusNode{
							name: "instance:" + k + ":probe:" + keyName(probe.key),
							ev: withInfo(base,
								member{key: []byte(keyInstanceInfo), val: info},
								member{key: []byte(keyProbeInfo), val: withID(probe)}),
						})
					}
				}
			}
		case keyIs(m.key, statusProbes) && m.val.kind == '{':
			for _, probe := range m.val.members {
				out = append(out, statusNode{
					name: "probe:" + keyName(probe.key),
					ev:   withInfo(base, member{key: []byte(keyProbeInfo), val: withID(probe)}),
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
func splitInstance(inst member) (node, []member) {
	if inst.val.kind != '{' {
		return inst.val, nil
	}
	var probes []member
	kept := make([]member, 0, len(inst.val.members))
	for _, m := range inst.val.members {
		if keyIs(m.key, statusProbes) {
			if m.val.kind == '{' {
				probes = append(probes, m)
			}
			continue
		}
		kept = append(kept, m)
	}
	return withID(member{key: inst.key, val: node{kind: '{', members: kept}}), probes
}

// withInfo returns an object of the base members followed by infos.
func withInfo(base []member, infos ...member) node {
	ms := make([]member, 0, len(base)+len(infos))
	ms = append(ms, base...)
	ms = append(ms, infos...)
	return node{kind: '{', members: ms}
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
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// withID returns m's value with "id" set from m's key when the value is an object without a
// non-null "id".
func withID(m member) node {
	v := m.val
	if v.kind != '{' {
		return v
	}
	if id := v.get("id"); id != nil && !id.isNull() {
		return v
	}
	var idVal node
	if k := keyName(m.key); isJSONInt(k) {
		idVal = node{raw: []byte(k)}
	} else {
		idVal = node{raw: m.key}
	}
	ms := make([]member, 0, len(v.members)+1)
	ms = append(ms, member{key: []byte(keyID), val: idVal})
	for _, old := range v.members {
		if !keyIs(old.key, "id") {
			ms = append(ms, old)
		}
	}
	return node{kind: '{', members: ms}
}

// keyName decodes a member's key token.
func keyName(key []byte) string {
	s, ok := unquoteToken(key)
	if !ok {
		return string(key)
	}
	return s
}
