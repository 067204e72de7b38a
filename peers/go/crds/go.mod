// Pins spire-controller-manager only for its CRD schemas (config/crd/bases), which the Helm
// chart tests validate the ClusterSPIFFEID against; nothing here is built.
module grantbox.invalid/peers/crds

go 1.26

require github.com/spiffe/spire-controller-manager v0.6.3
