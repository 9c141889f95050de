package wasim

import (
	"go.mau.fi/libsignal/ecc"
	"google.golang.org/protobuf/proto"

	"go.mau.fi/whatsmeow/proto/waCert"
	"go.mau.fi/whatsmeow/util/keys"
)

// certChain builds the Noise certificate chain: root signs intermediate,
// intermediate signs a leaf for the server's static key (notes §2.3).
func certChain(root, static *keys.KeyPair) ([]byte, error) {
	inter := keys.NewKeyPair()
	const interSerial = 1
	interDetails, err := proto.Marshal(&waCert.CertChain_NoiseCertificate_Details{
		Serial:       proto.Uint32(interSerial),
		IssuerSerial: proto.Uint32(0),
		Key:          inter.Pub[:],
		NotBefore:    proto.Uint64(0),
		NotAfter:     proto.Uint64(1 << 40),
	})
	if err != nil {
		return nil, err
	}
	interSig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*root.Priv), interDetails)
	leafDetails, err := proto.Marshal(&waCert.CertChain_NoiseCertificate_Details{
		Serial:       proto.Uint32(2),
		IssuerSerial: proto.Uint32(interSerial),
		Key:          static.Pub[:],
		NotBefore:    proto.Uint64(0),
		NotAfter:     proto.Uint64(1 << 40),
	})
	if err != nil {
		return nil, err
	}
	leafSig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*inter.Priv), leafDetails)
	return proto.Marshal(&waCert.CertChain{
		Leaf:         &waCert.CertChain_NoiseCertificate{Details: leafDetails, Signature: leafSig[:]},
		Intermediate: &waCert.CertChain_NoiseCertificate{Details: interDetails, Signature: interSig[:]},
	})
}
