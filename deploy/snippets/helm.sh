# The chart is deploy/helm/bonito in Bonito's repository. The token goes into a Secret
# (never into Helm values):
kubectl create namespace bonito
kubectl -n bonito create secret generic bonito-agent-token --from-literal=token='{{ org_token }}'
helm install bonito-gateway ./deploy/helm/bonito \
  --namespace bonito \
  --set controlPlane.url={{ control_plane_url }} \
  --set controlPlane.tokenSecret.name=bonito-agent-token \
  --set replicas=3 \
  --set resources.requests.memory=256Mi \
  --set resources.limits.memory=512Mi \
  --set credentials.aws.secretsManagerArn=arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME
