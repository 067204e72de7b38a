// spiffe-check is a non-Python Workload API client for grantbox's interop tests: with the
// go-spiffe v2 library it fetches a JWT-SVID and the JWT bundles from a Workload API socket,
// validates the SVID against those bundles, and prints what it saw as one JSON object.
// It never prints the SVID itself. Exit status 0 = validated, 1 = any failure.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type report struct {
	SpiffeID     string   `json:"spiffe_id"`
	Audience     []string `json:"audience"`
	ExpiresAt    int64    `json:"expires_at"`
	TrustDomains []string `json:"trust_domains"`
	KeyIDs       []string `json:"key_ids"`
	WrongAudRef  bool     `json:"wrong_audience_refused"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "spiffe-check: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	socket := flag.String("socket", "", "Workload API socket path")
	audience := flag.String("audience", "", "audience to request and validate")
	timeout := flag.Duration("timeout", 20*time.Second, "overall deadline")
	flag.Parse()
	if *socket == "" || *audience == "" {
		fail("-socket and -audience are required")
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+*socket))
	if err != nil {
		fail("cannot reach the Workload API: %v", err)
	}
	defer client.Close()

	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: *audience})
	if err != nil {
		fail("fetching a JWT-SVID failed: %v", err)
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		fail("fetching the JWT bundles failed: %v", err)
	}
	validated, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{*audience})
	if err != nil {
		fail("the SVID does not validate against the bundles: %v", err)
	}
	_, wrongErr := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{*audience + "/other"})

	out := report{
		SpiffeID:    validated.ID.String(),
		Audience:    validated.Audience,
		ExpiresAt:   validated.Expiry.Unix(),
		WrongAudRef: wrongErr != nil,
	}
	for _, bundle := range bundles.Bundles() {
		out.TrustDomains = append(out.TrustDomains, bundle.TrustDomain().IDString())
		for kid := range bundle.JWTAuthorities() {
			out.KeyIDs = append(out.KeyIDs, kid)
		}
	}
	sort.Strings(out.TrustDomains)
	sort.Strings(out.KeyIDs)
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("cannot write the report: %v", err)
	}
}
