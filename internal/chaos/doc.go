// Package chaos holds the chaos suite: tests that run the fleet as real OS processes (two
// coordinators, three workers and two shippers of the dtfleet binary) on a 3-node NATS
// JetStream cluster of nats-server processes with replicas 3, against the fake appliance and the
// fake Devo in the test process, and inject faults on a schedule during a backfill and live
// polling: SIGKILL of every role, loss of the node leading the results stream, appliance 5xx,
// 429, stalls and truncated bodies, Devo resets, stalls and early closes. At the end
// they check that every event of the fake's ground truth was delivered, that duplicates are
// bounded by the batches the faults could leave in flight, and the order per lane, and print a
// table of the figures.
//
// The package has no code of its own: it only imports the project's packages in its tests. A
// short profile runs with `go test ./internal/chaos` (skipped with -short); DTFLEET_CHAOS_LONG
// set to a duration (for example 30m) runs the long profile instead.
package chaos
