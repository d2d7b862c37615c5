# The chart is deploy/helm/bonito in Bonito's repository. The token goes into a Secret
# (never into Helm values):
kubectl create namespace bonito
kubectl -n bonito create secret generic bonito-agent-token --from-literal=token='{{ org_token }}'
# Provider credentials: add the line of your secret store to the install, e.g.
#   --set credentials.aws.secretsManagerArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:bonito
#   --set credentials.azure.keyVaultUrl=https://my-vault.vault.azure.net/
#   --set credentials.gcp.secretName=projects/my-project/secrets/bonito
# (or credentials.existingSecret, a Secret holding the JSON file), with the identity that may
# read it in serviceAccount.annotations.
helm install bonito-gateway ./deploy/helm/bonito \
  --namespace bonito \
  --set controlPlane.url={{ control_plane_url }} \
  --set controlPlane.tokenSecret.name=bonito-agent-token \
  --set replicas=3 \
  --set resources.requests.memory=256Mi \
  --set resources.limits.memory=512Mi
