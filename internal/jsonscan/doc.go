// Package jsonscan is dtfleet's one JSON scanner. A single validating, compacting grammar serves
// three uses: Split streams a large body (a top-level array, an object wrapping arrays, or one
// object) into its values' compact bytes with memory bounded by the largest value; Compact and
// CompactLookup validate and compact one value held in memory, reading top-level members in the
// same pass; Parse builds an order-preserving tree (Node) that can be edited and re-encoded byte
// for byte. KeyIs and Unquote read string tokens.
//
// The package owns JSON syntax only: which endpoint answers with which Shape, and what the
// values mean, belong to its callers. It is a leaf: it imports the standard library only, and no
// package of dtfleet.
package jsonscan
