// Package events turns the raw events of Darktrace responses into the events dtfleet delivers: a
// Processor validates and compacts each raw event, derives its dedupe key and time, flattens
// /status snapshots and obfuscates configured fields. Everything here is a pure function of its
// input and does no I/O.
//
// The package owns the meaning of events (keys, times, flattening, obfuscation); JSON syntax
// (scanning, splitting, trees) belongs to internal/jsonscan, and which endpoint answers with which
// shape to the Darktrace client (worker/darktrace). It may import internal/config and
// internal/jsonscan, and no other package of dtfleet.
package events
