// Package layout holds no code of its own: its tests keep the repository's import rules, the
// ones the README's "Layout" section states. The roles (coordinator, worker, shipper) meet only
// on the bus, so no role package imports another role's packages; proto, internal/jsonscan and
// internal/devotag are leaves that import no project package; the Darktrace client does not import event
// processing; nothing imports cmd.
package layout
