// Application Insights on a Log Analytics workspace. Local (instrumentation key) authentication is
// off: the Functions host sends telemetry with the app's identity (Monitoring Metrics Publisher,
// see app-access.bicep, and APPLICATIONINSIGHTS_AUTHENTICATION_STRING in function-app.bicep).

param logAnalyticsName string
param appInsightsName string
param location string
param tags object

@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

// Names and ids only: the connection string is read where it is needed (function-app.bicep), never
// passed around as an output.
output appInsightsName string = appInsights.name
output appInsightsId string = appInsights.id
output workspaceId string = workspace.id
