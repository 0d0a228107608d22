// Command cosigverify checks a signed checkpoint with independent Go implementations of the C2SP formats:
// golang.org/x/mod/sumdb/note for the signed note and the log's Ed25519 signature,
// github.com/transparency-dev/formats/note for cosignature/v1 witness cosignatures, and filippo.io/torchwood
// for the tlog-checkpoint text.
//
// Usage: cosigverify -log <log vkey> [-witness <witness vkey>]... < note
//
// It prints one JSON object: the checkpoint's origin, size and root, and each verified signature's key name
// (with the cosignature timestamp for witnesses). Exit status 1 if the note does not verify under the log
// key and every given witness key.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"filippo.io/torchwood"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

type witnessList []string

func (w *witnessList) String() string     { return fmt.Sprint(*w) }
func (w *witnessList) Set(v string) error { *w = append(*w, v); return nil }

type signature struct {
	Name      string `json:"name"`
	Timestamp int64  `json:"timestamp,omitempty"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cosigverify: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	logKey := flag.String("log", "", "the log's note verifier key")
	var witnesses witnessList
	flag.Var(&witnesses, "witness", "a witness's cosignature/v1 verifier key (repeatable)")
	flag.Parse()

	msg, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	logVerifier, err := note.NewVerifier(*logKey)
	if err != nil {
		fail("log key: %v", err)
	}
	verifiers := []note.Verifier{logVerifier}
	for _, w := range witnesses {
		v, err := fnote.NewVerifierForCosignatureV1(w)
		if err != nil {
			fail("witness key %q: %v", w, err)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fail("note.Open: %v", err)
	}
	checkpoint, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil {
		fail("checkpoint: %v", err)
	}
	seen := map[string]bool{}
	var sigs []signature
	for _, s := range n.Sigs {
		out := signature{Name: s.Name}
		if s.Name != logVerifier.Name() {
			t, err := fnote.CoSigV1Timestamp(s)
			if err != nil {
				fail("cosignature timestamp: %v", err)
			}
			out.Timestamp = t.Unix()
		}
		seen[s.Name] = true
		sigs = append(sigs, out)
	}
	if !seen[logVerifier.Name()] {
		fail("no signature by the log key")
	}
	for _, v := range verifiers[1:] {
		if !seen[v.Name()] {
			fail("no cosignature by witness %s", v.Name())
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"origin":     checkpoint.Origin,
		"size":       checkpoint.N,
		"root":       base64.StdEncoding.EncodeToString(checkpoint.Hash[:]),
		"signatures": sigs,
	})
}
