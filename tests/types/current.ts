export type Json =
  | string
  | number
  | boolean
  | null
  | { [key: string]: Json | undefined }
  | Json[]

export type Database = {
  // Allows to automatically instantiate createClient with right options
  // instead of createClient<Database, { PostgrestVersion: 'XX' }>(URL, KEY)
  __InternalSupabase: {
    PostgrestVersion: "12.2.3 (519615d)"
  }
  graphql_public: {
    Tables: {
      [_ in never]: never
    }
    Views: {
      [_ in never]: never
    }
    Functions: {
      graphql: {
        Args: {
          extensions?: Json
          operationName?: string
          query?: string
          variables?: Json
        }
        Returns: Json
      }
    }
    Enums: {
      [_ in never]: never
    }
    CompositeTypes: {
      [_ in never]: never
    }
  }
  public: {
    Tables: {
      feature_flags: {
        Row: {
          description: string | null
          enabled_for_roles: string[]
          flag_key: string
          flag_name: string
          id: string
          is_enabled: boolean
          metadata: Json
          rollout_percentage: number
          updated_at: string
        }
        Insert: {
          description?: string | null
          enabled_for_roles?: string[]
          flag_key: string
          flag_name: string
          id?: string
          is_enabled?: boolean
          metadata?: Json
          rollout_percentage?: number
          updated_at?: string
        }
        Update: {
          description?: string | null
          enabled_for_roles?: string[]
          flag_key?: string
          flag_name?: string
          id?: string
          is_enabled?: boolean
          metadata?: Json
          rollout_percentage?: number
          updated_at?: string
        }
        Relationships: []
      }
      mechanics: {
        Row: {
          created_at: string | null
          first_name: string
          id: string
          is_online: boolean
          last_name: string
          status: string
          user_id: string | null
        }
        Insert: {
          created_at?: string | null
          first_name: string
          id?: string
          is_online?: boolean
          last_name: string
          status?: string
          user_id?: string | null
        }
        Update: {
          created_at?: string | null
          first_name?: string
          id?: string
          is_online?: boolean
          last_name?: string
          status?: string
          user_id?: string | null
        }
        Relationships: []
      }
      session_requests: {
        Row: {
          accepted_at: string | null
          created_at: string
          customer_id: string
          id: string
          mechanic_id: string | null
          metadata: Json
          notification_sent_at: string | null
          plan_code: string | null
          preferred_mechanic_id: string | null
          priority_notified_at: string | null
          priority_window_minutes: number
          session_type: string
          status: Database["public"]["Enums"]["session_request_status"]
          updated_at: string
        }
        Insert: {
          accepted_at?: string | null
          created_at?: string
          customer_id: string
          id?: string
          mechanic_id?: string | null
          metadata?: Json
          notification_sent_at?: string | null
          plan_code?: string | null
          preferred_mechanic_id?: string | null
          priority_notified_at?: string | null
          priority_window_minutes?: number
          session_type?: string
          status?: Database["public"]["Enums"]["session_request_status"]
          updated_at?: string
        }
        Update: {
          accepted_at?: string | null
          created_at?: string
          customer_id?: string
          id?: string
          mechanic_id?: string | null
          metadata?: Json
          notification_sent_at?: string | null
          plan_code?: string | null
          preferred_mechanic_id?: string | null
          priority_notified_at?: string | null
          priority_window_minutes?: number
          session_type?: string
          status?: Database["public"]["Enums"]["session_request_status"]
          updated_at?: string
        }
        Relationships: [
          {
            foreignKeyName: "session_requests_mechanic_id_fkey"
            columns: ["mechanic_id"]
            isOneToOne: false
            referencedRelation: "mechanics"
            referencedColumns: ["id"]
          },
          {
            foreignKeyName: "session_requests_preferred_mechanic_id_fkey"
            columns: ["preferred_mechanic_id"]
            isOneToOne: false
            referencedRelation: "mechanics"
            referencedColumns: ["id"]
          },
        ]
      }
    }
    Views: {
      priority_summary: {
        Row: {
          mechanic_id: string | null
          requests: number | null
        }
        Relationships: [
          {
            foreignKeyName: "session_requests_preferred_mechanic_id_fkey"
            columns: ["mechanic_id"]
            isOneToOne: false
            referencedRelation: "mechanics"
            referencedColumns: ["id"]
          },
        ]
      }
    }
    Functions: {
      priority_timeouts: {
        Args: { p_now?: string }
        Returns: {
          id: string
          priority_notified_at: string
        }[]
      }
      uid: { Args: never; Returns: string }
    }
    Enums: {
      session_request_status: "pending" | "accepted" | "cancelled"
    }
    CompositeTypes: {
      [_ in never]: never
    }
  }
}

type DatabaseWithoutInternals = Omit<Database, "__InternalSupabase">

type DefaultSchema = DatabaseWithoutInternals[Extract<keyof Database, "public">]

export type Tables<
  DefaultSchemaTableNameOrOptions extends
    | keyof (DefaultSchema["Tables"] & DefaultSchema["Views"])
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends DefaultSchemaTableNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
        DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])
    : never = never,
> = DefaultSchemaTableNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
      DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])[TableName] extends {
      Row: infer R
    }
    ? R
    : never
  : DefaultSchemaTableNameOrOptions extends keyof (DefaultSchema["Tables"] &
        DefaultSchema["Views"])
    ? (DefaultSchema["Tables"] &
        DefaultSchema["Views"])[DefaultSchemaTableNameOrOptions] extends {
        Row: infer R
      }
      ? R
      : never
    : never

export type Enums<
  DefaultSchemaEnumNameOrOptions extends
    | keyof DefaultSchema["Enums"]
    | { schema: keyof DatabaseWithoutInternals },
  EnumName extends DefaultSchemaEnumNameOrOptions extends {
    schema: keyof DatabaseWithoutInternals
  }
    ? keyof DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"]
    : never = never,
> = DefaultSchemaEnumNameOrOptions extends {
  schema: keyof DatabaseWithoutInternals
}
  ? DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"][EnumName]
  : DefaultSchemaEnumNameOrOptions extends keyof DefaultSchema["Enums"]
    ? DefaultSchema["Enums"][DefaultSchemaEnumNameOrOptions]
    : never

export const Constants = {
  graphql_public: {
    Enums: {},
  },
  public: {
    Enums: {
      session_request_status: ["pending", "accepted", "cancelled"],
    },
  },
} as const
